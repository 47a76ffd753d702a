"""Stable Diffusion inpainting folders (a 9-channel UNet2DConditionModel; noisecraft.interop.diffusers_inpaint):
`inpaint` with method "trained" gives the latents of StableDiffusionInpaintPipeline on the same tiny model, noise,
prompt, guidance, mask and masked-image latents; the known pixels are kept exactly; bad layouts are one-line
errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers_tiny import SD_BETAS, diffusers, scheduler_for, tiny_clip, tiny_vae

import noisecraft
from noisecraft.core.random import make_generators, randn_like
from noisecraft.editing.inpaint import inpaint
from noisecraft.errors import CheckpointError
from noisecraft.pipelines import Request, plan


def tiny_inpaint_unet(seed: int = 0, in_channels: int = 9):
    torch.manual_seed(seed)
    return diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=in_channels, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        norm_num_groups=8, cross_attention_dim=32, attention_head_dim=8).eval()


def inpaint_folder(tmp_path, scheduler: str, in_channels: int = 9):
    text_encoder, tokenizer = tiny_clip(tmp_path)
    pipe = diffusers.StableDiffusionInpaintPipeline(
        vae=tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=tiny_inpaint_unet(in_channels=in_channels),
        scheduler=scheduler_for(scheduler, "epsilon", **SD_BETAS), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    folder = tmp_path / f"sd-inpaint-{scheduler}-{in_channels}"
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def image_and_mask():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 16, 16, generator=g) * 2 - 1
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 6:16] = 1
    return image, mask


@pytest.mark.parametrize("scheduler,sampler,spacing", [("euler", "euler", "trailing"), ("ddim", "ddim", "leading")])
def test_trained_inpainting_matches_the_inpaint_pipeline(tmp_path, scheduler, sampler, spacing):
    folder = inpaint_folder(tmp_path, scheduler)
    run = noisecraft.load(folder)
    assert run.data_shape == (4, 8, 8) and run.conditions.get("inpaint") is not None
    image, mask = image_and_mask()
    request = Request(prompts=("a red dog",), negative_prompt="cat", guidance=3.0, sampler=sampler, steps=5,
                      step_schedule=spacing, seed=5, num=2)
    ours = inpaint(run, image, mask, request)  # method auto -> trained
    assert ours.parameters["inpaint"]["method"] == "trained"
    keep = ~mask.bool().expand_as(ours.images)
    assert torch.equal(ours.images[keep], image.expand_as(ours.images)[keep])  # known pixels exactly
    # the pipeline, from the same starting latents and given our masked-image latents (it would draw its own)
    concat = run.conditions.get("inpaint").encode(image, mask)["concat"]
    pipe = diffusers.StableDiffusionInpaintPipeline.from_pretrained(folder, local_files_only=True)
    sigma0 = float(plan(run, request).sigmas[0])
    start = randn_like(torch.empty(2, *run.data_shape), make_generators(5, 2)) * sigma0
    latents = start / (pipe.scheduler.init_noise_sigma if scheduler == "euler" else math.sqrt(1 + sigma0**2))
    ref = pipe("a red dog", image=(image + 1) / 2, mask_image=mask, masked_image_latents=concat[:, 1:],
               negative_prompt="cat", guidance_scale=3.0, num_inference_steps=5, height=16, width=16,
               num_images_per_prompt=2, latents=latents, output_type="latent").images
    err = float((ours.samples - ref).abs().max())
    print(f"SD inpainting vs StableDiffusionInpaintPipeline ({scheduler}): max |latents diff| {err:.2e}")
    assert err <= 1e-4, err


def test_the_mask_is_resized_by_nearest_neighbour_and_the_masked_image_encoded(tmp_path):
    run = noisecraft.load(inpaint_folder(tmp_path, "euler"))
    c = run.conditions.get("inpaint")
    image, mask = image_and_mask()
    concat = c.encode(image, mask)["concat"]
    assert concat.shape == (1, 5, 8, 8)
    assert torch.equal(concat[:, :1], mask[..., ::2, ::2])  # nearest: the top-left pixel of each 2x2 cell
    from noisecraft.autoencoder.latents import encode_images

    assert torch.allclose(concat[:, 1:], encode_images(run.autoencoder, image * (1 - mask), progress=False))


def test_other_extra_channel_layouts_are_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="reads 3 channels beside its 4-channel latents; supported: 5"):
        noisecraft.load(inpaint_folder(tmp_path, "euler", in_channels=7))


def test_cli_inpaints_with_a_stable_diffusion_inpainting_folder(tmp_path):
    from PIL import Image

    from noisecraft.cli.main import main

    image, mask = image_and_mask()
    Image.fromarray(((image[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()).save(tmp_path / "in.png")
    Image.fromarray((mask[0, 0] * 255).byte().numpy()).save(tmp_path / "mask.png")
    out = tmp_path / "out"  # a directory: one PNG per image at the image's size
    assert main(["inpaint", "--checkpoint", str(inpaint_folder(tmp_path, "euler")), "--image", str(tmp_path / "in.png"),
                 "--mask", str(tmp_path / "mask.png"), "--prompt", "a dog", "--steps", "2", "--out", str(out)]) == 0
    result = np.array(Image.open(next(out.glob("*.png"))))
    kept = np.array(Image.open(tmp_path / "in.png"))
    assert result.shape == kept.shape and (result[:4] == kept[:4]).all()  # rows 0-3 are unmasked: the input's
