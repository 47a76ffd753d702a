"""Guidance on a trained model where the answer is known: a class-conditional MLP on the 8 Gaussians (label =
mode), trained with condition dropout by the Trainer, sampled with classifier-free guidance."""

import math
from dataclasses import replace

import pytest
import torch

from noisecraft.build import build_denoiser
from noisecraft.data import load_dataset
from noisecraft.guidance import ClassifierFreeGuidance
from noisecraft.pipelines import sample_batches as generate
from noisecraft.presets import get_preset
from noisecraft.schedules import get_sigmas
from noisecraft.training.trainer import Trainer


@pytest.mark.slow
def test_cfg_on_a_trained_class_conditional_toy_model(tmp_path):
    cfg = get_preset("toy2d")
    cfg = replace(cfg, network=replace(cfg.network, num_classes=8), data=replace(cfg.data, limit=4096),
                  train=replace(cfg.train, steps=1500, checkpoint_every=10**6))
    trainer = Trainer(cfg, tmp_path, progress=False)
    assert trainer.config.conditioning.cond_dropout > 0  # the null label is trained too
    trainer.run()
    data = load_dataset("8gaussians", split="all", limit=4096)
    centres = torch.stack([data.images[data.labels == k].mean(0) for k in range(8)]).double()  # (8, 2)
    denoiser = build_denoiser(trainer.config, trainer.ema).eval()
    sigmas = get_sigmas(denoiser.schedule, 18, "karras")
    labels = torch.arange(2000) % 8
    on_class, spread, others = {}, {}, {}
    for w in (0.0, 1.0, 3.0):
        with torch.no_grad():
            x = generate(ClassifierFreeGuidance(denoiser, w), sigmas, (2,), num=2000, seed=0, batch_size=2000,
                         cond={"class_labels": labels})
        d = torch.cdist(x.double(), centres)
        on_class[w] = (d.argmin(1) == labels).float().mean().item()
        spread[w] = d.gather(1, labels[:, None]).median().item()
        others[w] = d.scatter(1, labels[:, None], math.inf).min(1).values.median().item()
    print(f"on requested mode: {on_class}; median distance to its centre: {spread}; to the nearest other: {others}")
    assert abs(on_class[0.0] - 1 / 8) < 0.05  # w = 0: the unconditional model ignores the label
    assert on_class[1.0] > 0.9  # the conditional model
    assert spread[1.0] < 2 * 0.15 * math.sqrt(2 * math.log(2))  # near the data's Rayleigh median (0.18)
    # w > 1 samples p(x | y) p(y | x)^(w - 1) (Ho & Salimans 2022, sec. 3): more on the requested mode, pushed
    # away from the other classes
    assert on_class[3.0] >= on_class[1.0] and on_class[3.0] > 0.97
    assert others[3.0] > others[1.0]
