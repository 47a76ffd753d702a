"""Guided (LCM-style) distillation from a text-conditioned teacher: the legacy fixture `text-trainable` (the
glyphs-text preset at 16x16 with a trainable text encoder inside the U-Net, EDM, condition dropout 0.1) is the
teacher; the student reads the guidance scale w as an input and samples text prompts with one network call per
step, from the CLI too (`noisecraft sample --sampler consistency --steps 2 --prompt ... --guidance w`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from noisecraft import load
from noisecraft.cli.main import main
from noisecraft.conditions.text import TEXT_IDS
from noisecraft.distill.guided import GUIDANCE_KEY, GuidedTeacher
from noisecraft.distill.trainer import Distiller, student_config, unconditional
from noisecraft.guidance import ClassifierFreeGuidance
from noisecraft.pipelines import Request, generate

TEACHER = Path(__file__).resolve().parents[1] / "fixtures" / "legacy" / "text-trainable"
PROMPT = "bold serif capital letter G"
SMALL = ("train.batch_size=8", "train.threads=1", "sample.num=2")


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    out = tmp_path_factory.mktemp("lcm-text")
    distiller = Distiller(student_config(TEACHER, "lcm", steps=3, overrides=SMALL), out / "student", progress=False)
    return distiller, out / "student"


def test_the_guided_teacher_of_a_text_batch_is_classifier_free_guidance(student):
    """The distiller's unconditional side of a text batch (token ids of the trainable encoder) is the text
    condition's null, the one the sampling pipeline guides against: its guided teacher at per-sample w equals the
    pipeline's ClassifierFreeGuidance of the same prompt at that w."""
    distiller, _ = student
    run = load(TEACHER)
    cond, uncond = run.conditions.request(Request(prompts=(PROMPT,), guidance=3.0, num=2), 2, 0)
    width = distiller.draw(0)["cond"][TEXT_IDS].shape[1]  # the training batches' token ids (the prompt's, padded)
    ids = distiller.teacher.net.text_encoder.token_ids([PROMPT, PROMPT])
    batch = {TEXT_IDS: torch.nn.functional.pad(ids, (0, width - ids.shape[1]))}
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([2.0, 2.0], dtype=torch.float64)
    with torch.no_grad():
        ours = GuidedTeacher(distiller.teacher, unconditional(distiller.conditions, batch))(
            x, sigma, {**batch, GUIDANCE_KEY: torch.tensor([3.0, 3.0])})
        cfg = ClassifierFreeGuidance(run.denoiser, 3.0, uncond=uncond)(x, sigma, cond)
        plain = run.denoiser(x, sigma, cond)
    torch.testing.assert_close(ours, cfg, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ours, plain)  # guidance at w = 3 is not the conditional model


def test_text_lcm_student_starts_as_the_teacher_and_samples_prompts(student, tmp_path, capsys):
    distiller, out = student
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([3.0, 3.0], dtype=torch.float64)
    batch = distiller.draw(0)
    cond = {k: v[:2] for k, v in batch["cond"].items()}  # two captions of the training data
    with torch.no_grad():  # the zero-initialised w input: before training the student is the teacher (off eps)
        before = distiller.denoiser(x, sigma, {**cond, GUIDANCE_KEY: torch.tensor([3.0, 1.0])})
        torch.testing.assert_close(before, distiller.teacher(x, sigma, cond), rtol=1e-2, atol=2e-3)
    distiller.run()
    run = load(out)
    assert run.config.distill.method == "lcm" and run.config.distill.guidance_input
    calls = []
    run.denoiser.register_forward_hook(lambda *a: calls.append(1))
    request = Request(prompts=(PROMPT,), guidance=3.0, sampler="consistency", steps=2, num=2, seed=4)
    images = generate(run, request).images
    assert images.shape == (2, 1, 16, 16) and torch.isfinite(images).all() and len(calls) == 2  # 1 call per step
    w1 = generate(run, Request(prompts=(PROMPT,), sampler="consistency", steps=1, num=2, seed=4)).images
    w3 = generate(run, Request(prompts=(PROMPT,), guidance=3.0, sampler="consistency", steps=1, num=2,
                               seed=4)).images
    assert not torch.equal(w1, w3)  # w reaches the network
    png = tmp_path / "g.png"
    assert main(["sample", "--checkpoint", str(out), "--sampler", "consistency", "--steps", "2", "--prompt", PROMPT,
                 "--guidance", "3", "--num", "2", "--out", str(png)]) == 0
    assert png.is_file()
    assert main(["sample", "--checkpoint", str(out), "--sampler", "heun", "--prompt", PROMPT, "--num", "2",
                 "--out", str(tmp_path / "h.png")]) == 2
    assert "samples with consistency" in capsys.readouterr().err
