"""Tiny base runs and concept folders shared by the fine-tuning tests (random weights, so every layer matters)."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from finetune_helpers import write_concept

from noisecraft.checkpoint import load_checkpoint, save_checkpoint
from noisecraft.presets import get_preset
from noisecraft.runconfig import DiffusionConfig
from noisecraft.training.trainer import Trainer

_TINY_UNET = dict(base_channels=8, channel_mult=(1, 2), attention_levels=(1,), head_channels=8, norm_groups=4,
                  num_res_blocks=1)


def _randomize_checkpoint(out: Path, seed: int, std: float = 0.15) -> None:
    """Replace a 2-step run's weights by random ones (zero-initialised output layers would hide LoRA layers)."""
    ckpt = load_checkpoint(out)
    g = torch.Generator().manual_seed(seed)
    weights = {k: torch.randn(v.shape, generator=g) * std if v.is_floating_point() else v
               for k, v in ckpt.ema.items()}
    save_checkpoint(out, config=ckpt.config, state=ckpt.state, model={k: v.clone() for k, v in weights.items()},
                    ema=weights,
                    optimizer={"state": {}, "param_groups": []})


def _train(config, out: Path, seed: int) -> Path:
    config = replace(config, train=replace(config.train, batch_size=8, steps=2, minutes=None, checkpoint_every=2,
                                           threads=1, warmup_steps=0))
    Trainer(config, out, progress=False).run()
    _randomize_checkpoint(out, seed)
    return out


@pytest.fixture(scope="session")
def text_base(tmp_path_factory) -> Path:
    """A text-to-image U-Net on 32x32 glyphs (MiniLM tokens + pooled vector), random weights."""
    c = get_preset("glyphs-text")
    c = replace(c, network=replace(c.network, **_TINY_UNET), data=replace(c.data, limit=32),
                text=replace(c.text, cache_dir=str(tmp_path_factory.mktemp("text-cache"))))
    return _train(c, tmp_path_factory.mktemp("text-base"), seed=1)


@pytest.fixture(scope="session")
def dit_base(tmp_path_factory) -> Path:
    """A class-conditional DiT on MNIST, random weights."""
    c = get_preset("mnist-dit")
    c = replace(c, network=replace(c.network, hidden_size=32, depth=2, num_heads=2), data=replace(c.data, limit=32))
    return _train(c, tmp_path_factory.mktemp("dit-base"), seed=2)


@pytest.fixture(scope="session")
def ddpm_base(tmp_path_factory) -> Path:
    """An unconditional linear-beta eps U-Net on 8x8 digits (exportable as a diffusers folder), random weights."""
    c = get_preset("digits")
    c = replace(c, diffusion=DiffusionConfig(schedule="linear", prediction="eps"),
                network=replace(c.network, **{**_TINY_UNET, "head_channels": 4}), data=replace(c.data, limit=32))
    return _train(c, tmp_path_factory.mktemp("ddpm-base"), seed=3)


@pytest.fixture
def concept(tmp_path) -> Path:
    return write_concept(tmp_path / "concept")
