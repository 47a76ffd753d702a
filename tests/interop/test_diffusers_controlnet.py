"""diffusers ControlNets on loaded Stable Diffusion runs (noisecraft.interop.diffusers_controlnet): the same latents
as StableDiffusionControlNetPipeline on the same tiny model, noise, prompt, guidance and control image; scale 0 is
the base; folders that do not fit are one-line errors."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers_tiny import (
    diffusers,
    scheduler_for,
    tiny_clip,
    tiny_sd_pipeline,
    tiny_sd_unet,
    tiny_unet2d_dir,
    tiny_vae,
)

import noisecraft
from noisecraft.conditions.control import Control
from noisecraft.core.random import make_generators, randn_like
from noisecraft.errors import CheckpointError, NoisecraftError
from noisecraft.interop.diffusers_controlnet import attach_controlnet
from noisecraft.pipelines import Request, generate, plan

ZERO_INITIALISED = ("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")
SD_BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


def tiny_controlnet(unet, seed: int = 1, factor_widths=(16, 32)):
    """ControlNetModel.from_unet (the U-Net's encoder copied), then its zero convolutions and the control encoder's
    last layer drawn at random, so that the control changes the output."""
    controlnet = diffusers.ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=factor_widths)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in controlnet.named_parameters():
            if name.startswith(ZERO_INITIALISED):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return controlnet.eval()


def controlnet_pipeline(tmp_path, scheduler: str):
    text_encoder, tokenizer = tiny_clip(tmp_path)
    unet = tiny_sd_unet()
    return diffusers.StableDiffusionControlNetPipeline(
        vae=tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, controlnet=tiny_controlnet(unet),
        scheduler=scheduler_for(scheduler, "epsilon", **SD_BETAS), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd-controlnet")
    out = {}
    for scheduler in ("euler", "ddim"):
        pipe = controlnet_pipeline(root, scheduler)
        out[scheduler] = root / f"pipe-{scheduler}"
        pipe.save_pretrained(out[scheduler], safe_serialization=True)
    pipe.controlnet.save_pretrained(root / "controlnet", safe_serialization=True)  # a ControlNetModel folder alone
    tiny_sd_pipeline(root, "euler").save_pretrained(root / "sd", safe_serialization=True)  # the same base, plain
    out["controlnet"], out["sd"] = root / "controlnet", root / "sd"
    return out


def edges(seed: int = 0) -> torch.Tensor:
    return (torch.rand(16, 16, generator=torch.Generator().manual_seed(seed)) > 0.75).float()


def pipeline_latents(folder, run, request: Request, scale: float, control: torch.Tensor, scheduler: str):
    pipe = diffusers.StableDiffusionControlNetPipeline.from_pretrained(folder, local_files_only=True)
    sigma0 = float(plan(run, request).sigmas[0])
    start = randn_like(torch.empty(request.num, *run.data_shape), make_generators(request.seed, request.num)) * sigma0
    latents = start / (pipe.scheduler.init_noise_sigma if scheduler == "euler" else math.sqrt(1 + sigma0**2))
    image = control.expand(1, 3, 16, 16)
    return pipe(request.prompts[0], image=image, negative_prompt=request.negative_prompt,
                guidance_scale=request.guidance, num_inference_steps=request.steps, height=16, width=16,
                num_images_per_prompt=request.num, latents=latents, controlnet_conditioning_scale=scale,
                output_type="latent").images


@pytest.mark.parametrize("scheduler,sampler,spacing", [("euler", "euler", "trailing"), ("ddim", "ddim", "leading")])
@pytest.mark.parametrize("scale", [1.0, 0.6])
def test_controlnet_pipeline_folder_matches_diffusers(folders, scheduler, sampler, spacing, scale):
    run = noisecraft.load(folders[scheduler])
    assert run.conditions.get("control").size == (16, 16)
    request = Request(prompts=("a red dog",), negative_prompt="cat", guidance=3.0, sampler=sampler, steps=5,
                      step_schedule=spacing, seed=5, num=2, conditions={"control": Control(edges(), scale=scale)})
    ours = generate(run, request).samples
    ref = pipeline_latents(folders[scheduler], run, request, scale, edges(), scheduler)
    err = float((ours - ref).abs().max())
    print(f"controlnet vs StableDiffusionControlNetPipeline ({scheduler}, scale {scale}): max |latents diff| {err:.2e}")
    assert err <= 1e-4, err


def test_attached_controlnet_folder_equals_the_pipeline_folder_and_scale_zero_is_the_base(folders):
    base = noisecraft.load(folders["sd"])
    request = Request(prompts=("a red dog",), guidance=2.0, sampler="euler", steps=4, seed=1, num=2)
    ref = generate(base, request).samples
    run = attach_controlnet(noisecraft.load(folders["sd"]), folders["controlnet"])
    pipe_run = noisecraft.load(folders["euler"])
    controlled = Request(**{**request.__dict__, "conditions": {"control": Control(edges(3), scale=0.8)}})
    a, b = generate(run, controlled).samples, generate(pipe_run, controlled).samples
    assert torch.equal(a, b)
    assert not torch.allclose(a, ref, atol=1e-4)  # the control acts
    off = Request(**{**request.__dict__, "conditions": {"control": Control(edges(3), scale=0.0)}})
    assert torch.equal(generate(run, off).samples, ref)  # scale 0: the base U-Net alone, bit for bit
    assert torch.equal(generate(run, request).samples, ref)  # no control image: the base too


def test_a_grey_map_is_every_channel_of_a_colour_control_image(folders):
    run = noisecraft.load(folders["euler"])
    request = Request(prompts=("a dog",), sampler="euler", steps=3, seed=2)
    grey = generate(run, Request(**{**request.__dict__, "conditions": {"control": edges(4)}})).samples
    rgb = generate(run, Request(**{**request.__dict__, "conditions": {"control": edges(4).expand(3, 16, 16)}})).samples
    assert torch.equal(grey, rgb)
    with pytest.raises(NoisecraftError, match="image size 16x16"):
        generate(run, Request(**{**request.__dict__, "conditions": {"control": torch.zeros(8, 8)}}))
    with pytest.raises(NoisecraftError, match=r"in \[0, 1\]"):
        generate(run, Request(**{**request.__dict__, "conditions": {"control": edges() * 2}}))


def test_controlnets_that_do_not_fit_are_one_line_errors(folders, tmp_path):
    unet = tiny_sd_unet()
    wrong_factor = tmp_path / "cn-f8"
    tiny_controlnet(unet, factor_widths=(16, 32, 96, 256)).save_pretrained(wrong_factor, safe_serialization=True)
    with pytest.raises(CheckpointError, match="downsamples by 8.*autoencoder by 2"):
        attach_controlnet(noisecraft.load(folders["sd"]), wrong_factor)
    other = tmp_path / "cn-wide"
    wide = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        norm_num_groups=8, cross_attention_dim=32, attention_head_dim=8)
    tiny_controlnet(wide).save_pretrained(other, safe_serialization=True)
    with pytest.raises(CheckpointError, match="block_out_channels"):
        attach_controlnet(noisecraft.load(folders["sd"]), other)
    with pytest.raises(CheckpointError, match="expected 'ControlNetModel'"):
        attach_controlnet(noisecraft.load(folders["sd"]), folders["sd"] / "unet")
    with pytest.raises(NoisecraftError, match="UNet2DConditionModel"):
        attach_controlnet(noisecraft.load(tiny_unet2d_dir(tmp_path)), folders["controlnet"])


def test_cli_attaches_a_controlnet_folder_and_samples_with_a_control_image(folders, tmp_path, capsys):
    from PIL import Image

    from noisecraft.cli.main import main

    Image.fromarray((edges(5).numpy() * 255).astype("uint8")).save(tmp_path / "edges.png")
    out = tmp_path / "out.png"
    args = ["sample", "--checkpoint", str(folders["sd"]), "--controlnet", str(folders["controlnet"]), "--control",
            str(tmp_path / "edges.png"), "--control-scale", "0.5", "--prompt", "a dog", "--steps", "2", "--num", "1",
            "--out", str(out)]
    assert main(args) == 0 and out.is_file()
    assert main(args[:3] + args[5:]) == 2  # --control without a ControlNet: one line naming what the model takes
    assert "no structure control" in capsys.readouterr().err
