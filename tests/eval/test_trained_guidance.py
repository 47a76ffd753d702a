"""Trained-model targets of classifier-free guidance (slow; skipped unless the runs exist).

    NOISECRAFT_MNIST_CLASS_RUN=runs/mnist-class NOISECRAFT_SCENES_TEXT_RUN=runs/scenes-text \\
        python -m pytest tests/eval/test_trained_guidance.py -m slow

The runs are made by `noisecraft train --preset mnist-class|scenes-text|ldm-scenes-text|ldm-scenes-layout`
(benchmarks/guidance.md names the exact commands and the guidance scales measured there); the same sampling
as benchmarks/guidance.py.
"""

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

MNIST_RUN = Path(os.environ.get("NOISECRAFT_MNIST_CLASS_RUN", "runs/mnist-class"))
SCENES_RUN = Path(os.environ.get("NOISECRAFT_SCENES_TEXT_RUN", "runs/scenes-text"))
NUM = 200


def _sample(run: Path, request, num: int):
    from noisecraft.pipelines import generate, load

    request = replace(request, sampler="dpmpp_2m", steps=20, step_schedule="karras", num=num, seed=0)
    with torch.no_grad():  # (layout runs: drawn layouts, as the benchmark; latent runs are decoded)
        images = generate(load(run), request).images
    return images.clamp(-1, 1)


@pytest.mark.skipif(not (MNIST_RUN / "checkpoint.safetensors").is_file(), reason=f"no run in {MNIST_RUN}")
def test_class_conditional_mnist_gives_the_requested_digit():
    from noisecraft.eval.mnist_net import load_mnist_classifier
    from noisecraft.pipelines import Request

    wanted = torch.arange(NUM) % 10
    images = _sample(MNIST_RUN, Request(class_ids=tuple(wanted.tolist()), guidance=2.0), NUM)
    with torch.no_grad():
        predicted = load_mnist_classifier()(images)[1].argmax(1)
    assert float((predicted == wanted).float().mean()) >= 0.95


@pytest.mark.skipif(not (SCENES_RUN / "checkpoint.safetensors").is_file(), reason=f"no run in {SCENES_RUN}")
def test_scenes_text_to_image_follows_the_prompt():
    from noisecraft.data.scenes import random_spec
    from noisecraft.eval.adherence import prompt_adherence
    from noisecraft.pipelines import Request

    rng = np.random.default_rng(777)
    specs = [random_spec(rng) for _ in range(NUM)]
    images = _sample(SCENES_RUN, Request(prompts=tuple(s.caption() for s in specs), guidance=3.0), NUM)
    assert prompt_adherence(images, specs)["adherence"] >= 0.80
