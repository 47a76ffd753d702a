"""Train a run for a budget of process CPU-seconds (not wall time), for comparisons on a shared machine.

Used by transformers_dit.py, mmdit_scenes.py and audio.py: equal CPU time is a fair budget when other jobs share
the cores, where a wall-clock budget is not.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch


def train_cpu_budget(cfg, out, cpu_minutes: float, snapshot_every: int = 0) -> dict:
    """Train `cfg` into run folder `out` on one torch thread until `cpu_minutes` of process CPU time are spent; log
    every 50 steps; with snapshot_every, copy the checkpoint to out/snapshots/step-N.safetensors every N steps.
    Returns steps, cpu_s, wall_s, loss_smooth (EMA 0.98 of the loss), params and the log."""
    from noisecraft.config import to_dict
    from noisecraft.files import atomic_write_json
    from noisecraft.training.trainer import Trainer

    torch.set_num_threads(1)
    cfg = replace(cfg, train=replace(cfg.train, minutes=None, steps=10**9))
    out = Path(out)
    trainer = Trainer(cfg, out, progress=False)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", to_dict(trainer.config))
    budget, log = cpu_minutes * 60, []
    c0, w0, smooth = time.process_time(), time.monotonic(), None
    while time.process_time() - c0 < budget:
        loss = trainer.train_step()
        smooth = loss if smooth is None else 0.98 * smooth + 0.02 * loss
        if trainer.step % 50 == 0:
            log.append({"step": trainer.step, "loss_smooth": smooth, "cpu_s": time.process_time() - c0,
                        "wall_s": time.monotonic() - w0})
            print(json.dumps(log[-1]), flush=True)
        if snapshot_every and trainer.step % snapshot_every == 0:
            path = trainer.save()
            (out / "snapshots").mkdir(exist_ok=True)
            shutil.copyfile(path, out / "snapshots" / f"step-{trainer.step:06d}.safetensors")
    trainer.save()
    return {"steps": trainer.step, "cpu_s": time.process_time() - c0, "wall_s": time.monotonic() - w0,
            "loss_smooth": smooth, "params": sum(p.numel() for p in trainer.net.parameters()), "log": log}
