"""`noisecraft distill` end to end on a tiny 2-D run: students load and sample, resume is exact, bad input is
refused with the allowed options named."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from noisecraft import load
from noisecraft.checkpoint import load_checkpoint
from noisecraft.cli.main import main
from noisecraft.config import from_dict, to_dict
from noisecraft.distill.trainer import PAIRS_FILE, Distiller, student_config
from noisecraft.errors import NoisecraftError
from noisecraft.pipelines import Request, generate
from noisecraft.presets import get_preset
from noisecraft.runconfig import RunConfig
from noisecraft.training.trainer import Trainer

SMALL = ("train.batch_size=32", "train.threads=1", "distill.reflow_pairs=64", "distill.solver_steps=4",
         "distill.reflow_steps=2", "distill.total_steps=8")


def _distil(teacher, out, method, steps, *overrides, resume=False):
    config = student_config(teacher, method, steps=steps, overrides=SMALL + overrides)
    return Distiller(config, out, resume=resume, progress=False).run()


def _tensors(path):
    ckpt = load_checkpoint(path)
    return {**{f"model.{k}": v for k, v in ckpt.model.items()}, **{f"ema.{k}": v for k, v in ckpt.ema.items()},
            **{f"target.{k}": v for k, v in (ckpt.phema or {}).get("0", {}).items()}, **ckpt.optim}


@pytest.mark.parametrize("method", ["cd", "ct"])
def test_resume_is_exact(teacher, tmp_path, method):
    _distil(teacher, tmp_path / "straight", method, 4, "train.checkpoint_every=2")
    _distil(teacher, tmp_path / "resumed", method, 2, "train.checkpoint_every=2")
    _distil(teacher, tmp_path / "resumed", method, 4, "train.checkpoint_every=2", resume=True)
    a, b = _tensors(tmp_path / "straight"), _tensors(tmp_path / "resumed")
    assert a.keys() == b.keys() and any(k.startswith("target.") for k in a) == (method == "cd")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["cd", "ct", "ect", "reflow"])
def test_students_load_and_sample_with_the_consistency_sampler(teacher, tmp_path, method):
    _distil(teacher, tmp_path, method, 3)
    run = load(tmp_path)
    assert run.config.distill.method == method and run.config.sample.sampler == "consistency"
    if method != "reflow":  # the boundary is built into the loaded student
        x = torch.randn(8, 2)
        assert torch.equal(run.denoiser(x, run.config.distill.boundary_sigma), x)
    else:
        assert (tmp_path / PAIRS_FILE).is_file()
    for steps in (1, 2, 4):
        out = generate(run, Request(sampler="consistency", steps=steps, num=16, seed=3))
        assert out.images.shape == (16, 2) and torch.isfinite(out.images).all()
    with pytest.raises(NoisecraftError, match="few-step student .* samples with consistency.*not 'heun'"):
        generate(run, Request(sampler="heun", num=2))


def test_configs_without_a_distill_section_still_load(teacher):
    old = to_dict(get_preset("toy2d"))
    old.pop("distill")
    assert from_dict(RunConfig, old).distill is None
    student = student_config(teacher, "cd", steps=1)
    assert from_dict(RunConfig, to_dict(student)) == student


def test_bad_input_names_the_options(teacher, tmp_path):
    with pytest.raises(NoisecraftError, match="'lcm' needs a class- or text-conditional teacher"):
        student_config(teacher, "lcm", steps=1)
    with pytest.raises(NoisecraftError, match="allowed: cd, ct, ect, lcm, reflow"):
        student_config(teacher, "dmd", steps=1)
    with pytest.raises(NoisecraftError, match="deterministic sampler; 'euler_a' is not one; allowed:"):
        student_config(teacher, "cd", steps=1, overrides=("distill.solver=euler_a",))
    with pytest.raises(NoisecraftError, match="'feature' needs a pixel-space image run"):
        student_config(teacher, "cd", steps=1, overrides=("distill.distance=feature",))
    with pytest.raises(NoisecraftError, match="distill.distance: unknown distance 'lpips'; allowed: l2"):
        student_config(teacher, "cd", steps=1, overrides=("distill.distance=lpips",))
    _distil(teacher, tmp_path, "cd", 1)
    with pytest.raises(NoisecraftError, match="is a few-step student .*distil from a run trained by noisecraft train"):
        student_config(tmp_path, "cd", steps=1)


def test_cli_distill_then_sample(teacher, tmp_path, capsys):
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(teacher), "--method", "cd", "--steps", "2", "--out", str(out),
                 *SMALL]) == 0
    assert (out / "checkpoint.safetensors").is_file() and (out / "samples.png").is_file()
    assert main(["sample", "--checkpoint", str(out), "--sampler", "consistency", "--steps", "2", "--num", "4",
                 "--out", str(tmp_path / "s.png")]) == 0
    assert main(["sample", "--checkpoint", str(out), "--sampler", "dpmpp_2m", "--num", "4",
                 "--out", str(tmp_path / "t.png")]) == 2
    assert "samples with consistency" in capsys.readouterr().err
    assert main(["distill", "--teacher", str(teacher), "--method", "cd", "--out", str(out)]) == 2
    assert "give --minutes or --steps" in capsys.readouterr().err


def test_lcm_student_of_a_class_unet_takes_the_guidance_scale(tmp_path):
    """The guided student: the U-Net reads w through its vector input, zero-initialised (so the student starts as
    the conditional teacher); `--guidance W` becomes that input, one network call per step."""
    config = get_preset("mnist-tiny")
    config = replace(config, network=replace(config.network, num_classes=10),
                     data=replace(config.data, limit=64),
                     train=replace(config.train, steps=2, batch_size=16, threads=1, minutes=None, checkpoint_every=2))
    Trainer(config, tmp_path / "teacher", progress=False).run()
    student = student_config(tmp_path / "teacher", "lcm", steps=2, overrides=("train.batch_size=16",
                                                                               "train.threads=1"))
    distiller = Distiller(student, tmp_path / "lcm", progress=False)
    teacher = distiller.teacher
    x, sigma, cond = torch.randn(2, 1, 28, 28), torch.tensor([3.0, 3.0], dtype=torch.float64), \
        {"class_labels": torch.tensor([3, 5])}
    with torch.no_grad():  # the zero-initialised w input: the student starts as the teacher (away from eps)
        before = distiller.denoiser(x, sigma, {**cond, "guidance_scale": torch.tensor([2.5, 1.0])})
        torch.testing.assert_close(before, teacher(x, sigma, cond), rtol=1e-2, atol=2e-3)
    distiller.run()
    run = load(tmp_path / "lcm")
    calls = []
    run.denoiser.register_forward_hook(lambda *a: calls.append(1))
    out = generate(run, Request(class_ids=(3,), guidance=2.0, sampler="consistency", steps=2, num=2))
    assert out.images.shape == (2, 1, 28, 28) and len(calls) == 2  # one call per step, not two (no CFG)
    w2 = generate(run, Request(class_ids=(3,), guidance=2.0, sampler="consistency", steps=1, num=2)).images
    w1 = generate(run, Request(class_ids=(3,), sampler="consistency", steps=1, num=2)).images
    assert not torch.equal(w1, w2)  # w reaches the network
    with pytest.raises(NoisecraftError, match="--guidance-interval"):
        generate(run, Request(class_ids=(3,), guidance=2.0, guidance_interval=(0.1, 5.0), sampler="consistency"))
