"""Trainer: exact resume, non-finite handling, checkpoint safety."""

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from noisecraft.checkpoint import CHECKPOINT_FILE, load_checkpoint
from noisecraft.errors import CheckpointError, TrainingDiverged
from noisecraft.presets import get_preset
from noisecraft.training.trainer import Trainer


def tiny(steps=8, **train):
    cfg = get_preset("mnist-tiny")
    return replace(cfg, data=replace(cfg.data, limit=64),
                   train=replace(cfg.train, steps=steps, checkpoint_every=1000, batch_size=8, warmup_steps=3,
                                 **train))


def weights(trainer):
    return {**{f"m.{k}": v.clone() for k, v in trainer.net.state_dict().items()},
            **{f"e.{k}": v.clone() for k, v in trainer.ema.state_dict().items()}}


def test_resume_is_bit_exact(tmp_path):
    """8 steps straight == 3 steps, stop, resume in a fresh Trainer, 5 more (data crosses an epoch)."""
    full = Trainer(tiny(8), tmp_path / "a", progress=False)
    full.run()
    part = Trainer(tiny(3), tmp_path / "b", progress=False)
    part.run()
    resumed = Trainer(tiny(8), tmp_path / "b", resume=True, progress=False)
    assert resumed.step == 3
    resumed.run()
    wa, wb = weights(full), weights(resumed)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    sa, sb = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for i in sa:
        for key in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][key]), torch.as_tensor(sb[i][key])), (i, key)
    by_step = {r["step"]: r["loss"] for r in resumed.log}  # (the interrupted run also logged its step 3)
    assert [r["loss"] for r in full.log] == [by_step[r["step"]] for r in full.log]


def test_batches_cover_each_epoch_once(tmp_path):
    t = Trainer(tiny(), tmp_path, progress=False)
    per_epoch = len(t.data) // t.config.train.batch_size
    seen = torch.cat([t.batch_indices(s) for s in range(per_epoch)])
    assert sorted(seen.tolist()) == list(range(per_epoch * 8))
    assert not torch.equal(t.batch_indices(0), t.batch_indices(per_epoch))  # a new permutation per epoch


def test_lr_warmup_and_ema_decay(tmp_path):
    t = Trainer(tiny(lr=1e-3), tmp_path, progress=False)
    assert [t.lr_at(s) for s in range(4)] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3])
    assert t.ema_decay_at(0) == pytest.approx(0.1) and t.ema_decay_at(10**6) == t.config.train.ema_decay


def test_ema_tracks_weights(tmp_path):
    t = Trainer(tiny(2, ema_decay=0.5), tmp_path, progress=False)
    before = [p.clone() for p in t.ema.parameters()]
    t.train_step()
    d = t.ema_decay_at(0)
    for e, e0, p in zip(t.ema.parameters(), before, t.net.parameters()):
        torch.testing.assert_close(e, d * e0 + (1 - d) * p)


def test_nonfinite_steps_are_skipped_then_stop(tmp_path, monkeypatch):
    t = Trainer(tiny(20, max_bad_steps=3), tmp_path, progress=False)
    t.train_step()
    t.save()
    good = {k: v.clone() for k, v in t.net.state_dict().items()}
    original = Trainer.loss
    monkeypatch.setattr(Trainer, "loss", lambda self, *a: original(self, *a) * float("nan"))
    t.train_step()
    t.train_step()
    assert t.bad_steps == 2 and t.step == 3
    for k, v in t.net.state_dict().items():
        assert torch.equal(v, good[k])  # skipped steps change nothing
    with pytest.raises(TrainingDiverged, match="consecutive non-finite.*intact"):
        t.train_step()
    ck = load_checkpoint(tmp_path)  # the last good checkpoint still loads and is finite
    assert ck.state["step"] == 1
    assert all(torch.isfinite(v).all() for v in ck.model.values())


def test_nan_gradient_is_skipped(tmp_path, monkeypatch):
    t = Trainer(tiny(5), tmp_path, progress=False)
    original = torch.nn.utils.get_total_norm
    monkeypatch.setattr(torch.nn.utils, "get_total_norm", lambda *a, **k: original(*a, **k) * float("inf"))
    t.train_step()
    assert t.bad_steps == 1


def test_checkpoint_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    t = Trainer(tiny(2), tmp_path, progress=False)
    t.run()
    before = (tmp_path / CHECKPOINT_FILE).read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    t.train_step()
    with pytest.raises(OSError):
        t.save()
    assert (tmp_path / CHECKPOINT_FILE).read_bytes() == before  # the old checkpoint is untouched
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert load_checkpoint(tmp_path).state["step"] == 2


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign", "pickle", "missing"])
def test_bad_checkpoints_raise_checkpoint_error(tmp_path, damage):
    from noisecraft.pipelines import load as load_denoiser

    t = Trainer(tiny(1), tmp_path / "run", progress=False)
    t.run()
    path = tmp_path / "run" / CHECKPOINT_FILE
    target = tmp_path / "run"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(1000))
    elif damage == "foreign":
        save_file({"weight": torch.zeros(3)}, str(path), metadata={"format": "pt"})
    elif damage == "pickle":
        marker = tmp_path / "pwned"

        class Payload:
            def __reduce__(self):
                return (Path.touch, (marker,))

        target = tmp_path / "evil.ckpt"
        torch.save({"x": Payload()}, target)
    elif damage == "missing":
        path.unlink()
    with pytest.raises(CheckpointError):
        load_denoiser(target)
    if damage == "pickle":
        assert not (tmp_path / "pwned").exists()


def test_config_and_log_written(tmp_path):
    t = Trainer(tiny(10), tmp_path, progress=False)
    t.run()
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["train"]["steps"] == 10 and cfg["network"]["in_channels"] == 1
    assert [r["step"] for r in t.log] == [5, 10]
    short = Trainer(tiny(3), tmp_path / "short", progress=False)  # fewer steps than log_every
    short.run()
    assert [r["step"] for r in short.log] == [3]  # the last step is always logged (loss.png needs it)
    assert load_checkpoint(tmp_path).config == cfg


def test_bf16_autocast_trains(tmp_path):
    t = Trainer(tiny(3, bf16=True), tmp_path, progress=False)
    before = [p.clone() for p in t.net.parameters()]
    losses = [t.train_step() for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses))) and t.bad_steps == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, t.net.parameters()))
    assert all(p.dtype == torch.float32 for p in t.net.parameters())  # master weights stay float32


def test_evaluation_during_training_keeps_best(tmp_path):
    from noisecraft.runconfig import EvalConfig

    cfg = replace(tiny(4), eval=EvalConfig(every=2, metrics=("fd",), num_samples=8, features="mnist"))
    t = Trainer(cfg, tmp_path, progress=False)
    with pytest.warns(Warning):  # 8 samples < feature dimension: the FD rank warning
        t.run()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    assert all(r["fd"] > 0 for r in records)
    assert (tmp_path / "metrics.png").is_file()
    best = load_checkpoint(tmp_path / "best")
    best_step = min(records, key=lambda r: r["fd"])["step"]
    assert best.state["step"] == best_step
