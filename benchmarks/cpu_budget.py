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


def preset_config(preset: str, overrides=()):
    """The RunConfig of a preset with `noisecraft train`-style overrides ("section.field=value"), on one thread."""
    from noisecraft.config import from_dict, to_dict
    from noisecraft.presets import get_preset
    from noisecraft.runconfig import RunConfig, apply_run_overrides

    return from_dict(RunConfig, apply_run_overrides(to_dict(get_preset(preset)), ["train.threads=1", *overrides]),
                     "config")


def meta(script: str, argv) -> dict:
    """The command, date and machine of a benchmark record."""
    import os
    import platform
    from datetime import date

    return {"command": f"python benchmarks/{script} " + " ".join(argv), "date": str(date.today()),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs), torch "
                       f"{torch.__version__}, 1 thread"}


def record(results: Path, key: str, value: dict) -> None:
    """Set results[key] = value in the JSON file `results` (created if missing)."""
    data = json.loads(results.read_text()) if results.is_file() else {}
    data[key] = value
    results.parent.mkdir(exist_ok=True)
    results.write_text(json.dumps(data, indent=1))


def train_preset_command(script: str, results: Path, args, argv, snapshot_every: int = 0) -> dict:
    """The `train` sub-command of the CPU-budget benchmarks: args.preset with args.overrides for args.cpu_minutes
    into args.out; writes OUT/cpu_budget.json, records it in `results` and prints one line."""
    out = Path(args.out)
    summary = {"preset": args.preset, "overrides": args.overrides,
               **train_cpu_budget(preset_config(args.preset, args.overrides), out, args.cpu_minutes, snapshot_every),
               "meta": meta(script, argv)}
    (out / "cpu_budget.json").write_text(json.dumps(summary, indent=1))
    record(results, f"train {out}", summary)
    print(f"{args.preset}: {summary['steps']} steps in {summary['cpu_s']:.0f} CPU-s ({summary['wall_s']:.0f} s wall)")
    return summary
