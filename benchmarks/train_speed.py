"""Training speed of each TrainConfig speed switch against the plain run, through the real trainer.

One timed unit is `Trainer.train_step()` (draw, forward, loss, backward, clip, AdamW, EMA) on the given
preset. All options are built first, then timed interleaved: in each repeat every option runs `--steps`
steps in turn (after `--warmup` untimed steps, which include torch.compile's compilation), so load from
other processes hits all options alike. Reported: images/s of the median repeat, and the ratio to the
plain run of the same repeat (median over repeats).

    python benchmarks/train_speed.py --preset mnist --batch 32 --steps 6 --warmup 2 --repeats 3

Writes a JSON record (default benchmarks/results/train_speed.json) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

OPTIONS: dict[str, dict] = {  # name -> TrainConfig (or "unet." for UNetConfig) overrides
    "plain (fp32)": {},
    "bf16 autocast": {"bf16": True},
    "bf16 autocast, channels-first": {"bf16": True, "unet.channels_last": False},  # the quickstart's on AMX CPUs
    "fp16 autocast + grad scaler": {"fp16": True},
    "torch.compile": {"compile": True},
    "channels-last off": {"unet.channels_last": False},
    "gradient checkpointing": {"grad_checkpointing": True},
    "fused AdamW": {"fused_adam": True},
    "grad_accum 2 (same global batch)": {"grad_accum": 2},
}


def build(preset: str, batch: int, options: dict, out: Path):
    from noisecraft.presets import get_preset
    from noisecraft.training.trainer import Trainer

    cfg = get_preset(preset)
    unet = {k.split(".", 1)[1]: v for k, v in options.items() if k.startswith("unet.")}
    train = {k: v for k, v in options.items() if not k.startswith("unet.")}
    cfg = replace(cfg, data=replace(cfg.data, limit=max(512, 4 * batch)),
                  network=replace(cfg.network, **unet),
                  train=replace(cfg.train, batch_size=batch, steps=10**6, minutes=None, warmup_steps=10, **train))
    return Trainer(cfg, out, progress=False)


def time_steps(trainer, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        trainer.train_step()
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="mnist")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=6, help="timed steps per option per repeat")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per option first (compilation)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", nargs="*", help="option names to run (default: all)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_speed.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.only or list(OPTIONS)
    tmp = Path(tempfile.mkdtemp(prefix="train_speed_"))
    trainers = {}
    for i, name in enumerate(names):
        t0 = time.perf_counter()
        trainers[name] = build(args.preset, args.batch, OPTIONS[name], tmp / str(i))
        time_steps(trainers[name], args.warmup)
        print(f"built + warmed up {name!r} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    seconds = {name: [] for name in names}
    for r in range(args.repeats):
        for name in names:
            seconds[name].append(time_steps(trainers[name], args.steps))
        print(f"repeat {r + 1}/{args.repeats} done", file=sys.stderr)
    images = args.batch * args.steps
    rows = []
    for name in names:
        ratios = [seconds[names[0]][r] / seconds[name][r] for r in range(args.repeats)]
        rows.append({"option": name, "overrides": OPTIONS[name],
                     "images_per_s": images / statistics.median(seconds[name]),
                     "ratio_to_plain": statistics.median(ratios), "seconds": seconds[name]})
    command = ["python", "benchmarks/train_speed.py", *(argv if argv is not None else sys.argv[1:])]
    record = {"command": shlex.join(command),
              "preset": args.preset, "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
              "repeats": args.repeats, "threads": args.threads, "torch": torch.__version__,
              "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "cpus": os.cpu_count(),
              "load_average_at_start": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print("| option | images/s | vs plain (median of per-repeat ratios) |\n|---|---|---|")
    for row in rows:
        print(f"| {row['option']} | {row['images_per_s']:.1f} | {row['ratio_to_plain']:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
