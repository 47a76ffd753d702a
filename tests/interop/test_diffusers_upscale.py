"""Stable Diffusion upscaler folders (StableDiffusionUpscalePipeline; noisecraft.interop.diffusers_upscale):
`upscale` gives the pipeline's latents on the same tiny model, noise, prompt, guidance, image and noise level."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers_tiny import SD_BETAS, diffusers, scheduler_for, tiny_clip, tiny_vae

import noisecraft
from noisecraft.core.random import make_generators, randn_like
from noisecraft.editing.upscale import upscale
from noisecraft.errors import NoisecraftError
from noisecraft.pipelines import Request, plan


def upscaler_folder(tmp_path, scheduler: str):
    text_encoder, tokenizer = tiny_clip(tmp_path)
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=7, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        norm_num_groups=8, cross_attention_dim=32, attention_head_dim=8, num_class_embeds=1000).eval()
    pipe = diffusers.StableDiffusionUpscalePipeline(
        vae=tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        low_res_scheduler=diffusers.DDPMScheduler(beta_schedule="linear", num_train_timesteps=1000),
        scheduler=scheduler_for(scheduler, "epsilon", **SD_BETAS), max_noise_level=350)
    folder = tmp_path / f"upscaler-{scheduler}"
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.mark.parametrize("scheduler,sampler,spacing,level", [("euler", "euler", "trailing", 20),
                                                              ("ddim", "ddim", "leading", 100)])
def test_upscale_matches_the_upscale_pipeline(tmp_path, scheduler, sampler, spacing, level):
    folder = upscaler_folder(tmp_path, scheduler)
    run = noisecraft.load(folder)
    c = run.conditions.get("low-res")
    assert (run.data_shape, c.low_size(), c.size, c.factor) == ((4, 8, 8), (8, 8), (16, 16), 2)
    low = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    request = Request(prompts=("a red dog",), negative_prompt="cat", guidance=3.0, sampler=sampler, steps=5,
                      step_schedule=spacing, seed=7, num=1)
    ours = upscale(run, low, request, aug_level=level)
    assert ours.images.shape == (1, 3, 16, 16)
    pipe = diffusers.StableDiffusionUpscalePipeline.from_pretrained(folder, local_files_only=True)
    sigma0 = float(plan(run, request).sigmas[0])
    start = randn_like(torch.empty(1, *run.data_shape), make_generators(7, 1)) * sigma0
    latents = start / (pipe.scheduler.init_noise_sigma if scheduler == "euler" else math.sqrt(1 + sigma0**2))
    ref = pipe("a red dog", image=(low + 1) / 2, negative_prompt="cat", guidance_scale=3.0, num_inference_steps=5,
               noise_level=level, latents=latents, generator=torch.Generator().manual_seed(7),
               output_type="latent").images
    err = float((ours.samples - ref).abs().max())
    print(f"SD upscaler vs StableDiffusionUpscalePipeline ({scheduler}, noise level {level}): max |latents diff| "
          f"{err:.2e}")
    assert err <= 1e-4, err


def test_noise_levels_are_checked_and_images_are_per_seed(tmp_path):
    run = noisecraft.load(upscaler_folder(tmp_path, "euler"))
    low = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    both = upscale(run, low, Request(prompts=("a dog",), steps=2, seed=3, num=2), aug_level=20)
    second = upscale(run, low[1:], Request(prompts=("a dog",), steps=2, seed=4, num=1), aug_level=20)
    assert torch.allclose(both.samples[1], second.samples[0], atol=1e-5)  # image i from seed + i
    for bad in (351, -1, 2.5):
        with pytest.raises(NoisecraftError, match=r"integer in \[0, 350\]"):
            upscale(run, low, Request(prompts=("a dog",), steps=2, num=2), aug_level=bad)
    with pytest.raises(NoisecraftError, match=r"upscales 3-channel 8x8 images .* by 2 to 16x16"):
        upscale(run, torch.zeros(3, 16, 16), Request(prompts=("a dog",), steps=2))
