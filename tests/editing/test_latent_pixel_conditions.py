"""Conditions made in pixel space on latent runs (`Condition.pixel_space`): a ControlNet whose edge maps are made
from the pixel images and downsampled by the autoencoder's factor inside its map encoder, and a latent
super-resolution model reading its low-resolution image in pixels, resized to the latents' size (the SD x4
upscaler's layout). Tiny runs on the ae-tiny latents (tests/editing/latent_run.py)."""

from dataclasses import replace

import pytest
import torch
from latent_run import tiny_autoencoder, tiny_latent_config

from noisecraft.checkpoint import load_checkpoint
from noisecraft.conditions.control import Control, canny_map
from noisecraft.conditions.low_res import downsample
from noisecraft.editing.upscale import upscale
from noisecraft.errors import ConfigError, NoisecraftError
from noisecraft.models.controlnet import ConditionEncoder
from noisecraft.pipelines import Request, conditioned, generate, load
from noisecraft.training.batches import step_seed
from noisecraft.training.trainer import Trainer


def control_config(ae_dir, base_dir, steps: int, factor: int = 4):
    c = tiny_latent_config(ae_dir, steps, hflip=True)
    return replace(c, conditioning=replace(c.conditioning, conditions=("control",), control_base=str(base_dir),
                                           control_factor=factor, cond_dropout=0.0),
                   train=replace(c.train, lr=5e-3, warmup_steps=1))


def sr_config(ae_dir, steps: int, factor: int = 2):
    c = tiny_latent_config(ae_dir, steps)
    return replace(c, conditioning=replace(c.conditioning, conditions=("low-res",), low_res_factor=factor,
                                           cond_dropout=0.0))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("latent-pixel")
    mp = pytest.MonkeyPatch()
    ae = tiny_autoencoder(root, mp)
    Trainer(tiny_latent_config(ae, 2), root / "base", progress=False).run()
    Trainer(control_config(ae, root / "base", 2), root / "ctrl", progress=False).run()
    Trainer(control_config(ae, root / "base", 4), root / "ctrl", resume=True, progress=False).run()
    Trainer(control_config(ae, root / "base", 4), root / "ctrl-once", progress=False).run()
    Trainer(sr_config(ae, 2), root / "sr", progress=False).run()
    yield root, ae
    mp.undo()


def test_the_map_encoder_downsamples_by_the_factor_and_starts_at_zero():
    for factor, size in ((1, 8), (2, 8), (4, 16), (8, 32)):
        enc = ConditionEncoder(1, 8, 2, factor=factor)
        out = enc(torch.rand(2, 1, size, size))
        assert out.shape == (2, 8, size // factor, size // factor) and not out.any()
    with pytest.raises(ConfigError, match="one of 1, 2, 4, 8, 16"):
        ConditionEncoder(1, 8, 2, factor=3)


def test_latent_controlnet_maps_are_the_canny_edges_of_the_same_flipped_pixels(runs):
    """With data.hflip, a sample whose latent is E(flip(x)) gets the edges of flip(x): pixels and latents are
    flipped by the same draw."""
    root, ae = runs
    t = Trainer(control_config(ae, root / "base", 4), root / "probe", progress=False)
    seen = set()
    for step in range(3):
        gen = torch.Generator().manual_seed(step_seed(t.config.train.seed, step, 0))
        x0, cond = t.batch(step, gen)
        idx = t.batch_indices(step)
        for i, j in enumerate(idx.tolist()):
            flipped = torch.equal(x0[i], t.images_hflip[j])
            assert flipped or torch.equal(x0[i], t.images[j])
            pixels = t.pixels[j].flip(-1) if flipped else t.pixels[j]
            assert torch.equal(cond["control"][i], canny_map(pixels[None])[0]), (step, i)
            seen.add(flipped)
    assert seen == {True, False}
    assert cond["control"].shape[-2:] == (16, 16) and x0.shape[-2:] == (4, 4)


def test_latent_controlnet_trains_on_the_frozen_base_and_resumes_bit_identically(runs):
    root, _ = runs
    base, a, b = (load_checkpoint(root / n) for n in ("base", "ctrl", "ctrl-once"))
    for k, v in base.ema.items():
        assert torch.equal(a.model[f"base.{k}"], v), k
    for k in a.model:
        assert torch.equal(a.model[k], b.model[k]) and torch.equal(a.ema[k], b.ema[k]), k
    assert any(a.model[k].abs().sum() > 0 for k in a.model if k.startswith("control.zero_convs"))


@pytest.mark.parametrize("sampler", ["heun", "euler_a"])
def test_latent_control_scale_zero_is_the_base_and_the_map_is_at_the_image_size(runs, sampler):
    root, _ = runs
    run, base = load(root / "ctrl"), load(root / "base")
    assert run.conditions.get("control").size == (16, 16) and run.data_shape == (2, 4, 4)
    edges = (torch.rand(16, 16, generator=torch.Generator().manual_seed(3)) > 0.8).float()
    request = Request(sampler=sampler, steps=3, seed=4, num=2)
    ref = generate(base, request)
    off = generate(run, replace(request, conditions={"control": Control(edges, scale=0.0)}))
    on = generate(run, replace(request, conditions={"control": Control(edges, scale=1.0)}))
    assert torch.equal(off.samples, ref.samples) and torch.equal(off.images, ref.images)
    assert on.images.shape == (2, 3, 16, 16) and not torch.equal(on.samples, ref.samples)
    with pytest.raises(NoisecraftError, match="image size 16x16"):
        generate(run, replace(request, conditions={"control": torch.zeros(4, 4)}))  # a latent-sized map


def test_a_wrong_control_factor_names_the_value_to_set(runs):
    root, ae = runs
    with pytest.raises(ConfigError, match="control_factor=4"):
        Trainer(control_config(ae, root / "base", 2, factor=2), root / "wrong", progress=False)


def test_latent_super_resolution_reads_pixels_at_the_latents_size(runs):
    root, _ = runs
    run = load(root / "sr")
    c = run.conditions.get("low-res")
    assert (c.size, c.input_size, c.low_size(), c.channels) == ((16, 16), (4, 4), (8, 8), 3)
    low = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    request = Request(steps=2, seed=3, num=2, conditions={"low-res": {"image": low, "level": 0.0}})
    _, cond = conditioned(run, request)
    assert torch.allclose(cond["concat"], downsample(low, 2), atol=1e-6)  # 8x8 pixels -> the 4x4 latents, by area
    out = upscale(run, low, Request(steps=2, seed=3, num=2), aug_level=0.0)
    assert out.images.shape == (2, 3, 16, 16) and out.samples.shape == (2, 2, 4, 4)
    one = upscale(run, low[1:], Request(steps=2, seed=4, num=1), aug_level=0.0)
    # image i from seed + i, alone or in a batch (to float rounding: a batch of 1 vs 2 convolves differently)
    assert torch.allclose(one.samples[0], out.samples[1], rtol=1e-5, atol=1e-4)
    with pytest.raises(NoisecraftError, match="3-channel 8x8"):
        upscale(run, torch.zeros(3, 4, 4))


def test_a_latent_super_resolution_run_needs_the_pixel_channels(runs):
    root, ae = runs
    c = sr_config(ae, 1)
    with pytest.raises(ConfigError, match="set data.channels"):
        Trainer(replace(c, data=replace(c.data, channels=None)), root / "sr-bad", progress=False)
