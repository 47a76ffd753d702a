"""Request bodies: AUTOMATIC1111's `StableDiffusionProcessingTxt2Img` / `...Img2Img` fields (the ones that mean
something here; A1111 clients send many more, which are ignored), plus noisecraft's `model` and `class_ids`.
Types are checked by pydantic (a wrong type is a 422 naming the field)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Txt2Img(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1                            # -1: a random seed (as A1111)
    sampler_name: str | None = None           # name or alias ("Euler a", "DPM++ 2M Karras"); None: the run's
    sampler_index: str | None = None          # A1111's older name of sampler_name
    scheduler: str | None = None              # step schedule ("Karras", "uniform"; "Automatic": the sampler's)
    batch_size: int = 1
    n_iter: int = 1
    steps: int | None = None                  # None: the run's
    cfg_scale: float = 7.0                    # classifier-free guidance; applied when a prompt or class is given
    width: int | None = None                  # None: the model's size
    height: int | None = None
    override_settings: dict[str, Any] = Field(default_factory=dict)  # sd_model_checkpoint picks the model
    send_images: bool = True
    model: str | None = None                  # noisecraft: the model name (else override_settings or the current)
    class_ids: list[int] | None = None        # noisecraft: classes of a class-conditional model (one or per image)


class Img2Img(Txt2Img):
    init_images: list[str] = Field(default_factory=list)   # base64 images; the first is edited
    mask: str | None = None                   # base64 mask: white is regenerated (inpainting)
    denoising_strength: float = 0.75
    inpainting_mask_invert: int = 0           # 1: black is regenerated


class Job(Img2Img):
    """POST /v1/jobs: a txt2img job, or img2img when init_images is given."""


class PngInfo(BaseModel):
    image: str


class Options(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sd_model_checkpoint: str | None = None
