"""SIGKILL at random points of a CPU training run (`python -m noisecraft train` in a subprocess, killed up
to twice, checkpoints every few steps so kills land in steps and in saves alike); the resumed run ends
with weights, EMA, post-hoc EMA, optimizer state and data order identical to an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from noisecraft.checkpoint import load_checkpoint
from noisecraft.errors import CheckpointError
from noisecraft.presets import get_preset
from noisecraft.training.trainer import Trainer

STEPS = 120
OVERRIDES = ["data.limit=256", "train.batch_size=16", "train.warmup_steps=10", "train.checkpoint_every=3",
             "train.threads=1", "train.phema_sigma_rels=[0.05,0.1]", "train.phema_every=10", "sample.num=8",
             "sample.steps=2"]


def _config():
    cfg = get_preset("toy2d")
    return replace(cfg, data=replace(cfg.data, limit=256), sample=replace(cfg.sample, num=8, steps=2),
                   train=replace(cfg.train, steps=STEPS, batch_size=16, warmup_steps=10, checkpoint_every=3,
                                 threads=1, phema_sigma_rels=(0.05, 0.1), phema_every=10))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    Trainer(_config(), out, progress=False).run()
    return load_checkpoint(out)


def _launch(out, resume: bool):
    cmd = [sys.executable, "-m", "noisecraft", "train", "--preset", "toy2d", "--out", str(out), "--steps",
           str(STEPS), *OVERRIDES, *(["--resume"] if resume else [])]
    return subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


def _has_checkpoint(out) -> bool:
    try:
        load_checkpoint(out)
        return True
    except CheckpointError:
        return False


def _kill_at_random(out, rng, resume: bool) -> None:
    """Start a run, wait until it trains (it writes config.json at the start), SIGKILL it after a random delay."""
    (out / "config.json").unlink(missing_ok=True)
    proc = _launch(out, resume)
    deadline = time.monotonic() + 60
    while not (out / "config.json").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(float(rng.uniform(0.0, 2.5)))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _trial(seed, tmp_path, reference, kills=2):
    rng = np.random.default_rng(seed)
    out = tmp_path / f"trial{seed}"
    out.mkdir()
    for _ in range(kills):
        _kill_at_random(out, rng, resume=_has_checkpoint(out))
    if _has_checkpoint(out):
        assert load_checkpoint(out).state["step"] <= STEPS
    t = Trainer(_config(), out, resume=_has_checkpoint(out), progress=False)
    t.run()
    final = load_checkpoint(out)
    assert final.state["step"] == STEPS
    assert final.state["data_hash"] == reference.state["data_hash"]  # the same batches in the same order
    for part in ("model", "ema", "optim"):
        a, b = getattr(final, part), getattr(reference, part)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (part, k)
    for k in reference.phema:
        for name, v in reference.phema[k].items():
            assert torch.equal(final.phema[k][name], v)
    assert final.optim_groups == reference.optim_groups
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_then_resume_is_identical(seed, tmp_path, reference):
    _trial(seed, tmp_path, reference)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 12))
def test_sigkill_then_resume_is_identical_many(seed, tmp_path, reference):
    _trial(seed, tmp_path, reference)


def test_ctrl_c_finishes_the_step_saves_and_resumes_exactly(tmp_path, reference):
    """SIGINT in the middle of a step: the step completes, a checkpoint is written, KeyboardInterrupt is
    raised; resuming from it ends identical to the uninterrupted run."""
    t = Trainer(_config(), tmp_path, progress=False)
    real_step = Trainer.train_step

    def step_with_interrupt(self):
        if self.step == 37:
            os.kill(os.getpid(), signal.SIGINT)  # arrives during the step
        return real_step(self)

    t.train_step = step_with_interrupt.__get__(t)
    with pytest.raises(KeyboardInterrupt):
        t.run()
    assert load_checkpoint(tmp_path).state["step"] == 38
    Trainer(_config(), tmp_path, resume=True, progress=False).run()
    final = load_checkpoint(tmp_path)
    assert final.state["data_hash"] == reference.state["data_hash"]
    for k, v in reference.model.items():
        assert torch.equal(final.model[k], v), k
