"""DiT vs U-Net and REPA on class-conditional MNIST at equal CPU time (benchmarks/transformers.md, issue 26).

    python benchmarks/transformers_dit.py speed                                  # CPU-s per step of candidates
    python benchmarks/transformers_dit.py train --preset mnist-class --cpu-minutes 10 --out runs/ditq-unet
    python benchmarks/transformers_dit.py train --preset mnist-dit-repa --cpu-minutes 10 --out runs/ditq-repa \\
        --snapshot-every 250
    python benchmarks/transformers_dit.py eval runs/ditq-unet --num 1000 --grid benchmarks/transformers_unet.png
    python benchmarks/transformers_dit.py curve runs/ditq-repa --num 300                 # FD of each snapshot
    python benchmarks/transformers_dit.py sigma-mse runs/dit-unet runs/dit-best         # denoising MSE by sigma
    python benchmarks/transformers_dit.py class-gain --preset mnist-dit --steps 300 network.class_embed_std=1.0

Equal *CPU* time rather than wall time: the 2-core machine is shared with other jobs, so every run uses one torch
thread and stops after a budget of process CPU seconds (`time.process_time`, data loading excluded); the wall time
is recorded too. `train` snapshots the checkpoint every N steps into RUN/snapshots/ (for steps to a given FD).

`eval`: image i asks for digit i mod 10 at classifier-free guidance w (default 2), sampler dpmpp_2m with 20 Karras
steps (as benchmarks/guidance.py), seeds 0..num-1; the score is the fraction that noisecraft's separate MNIST
classifier (`noisecraft.eval.mnist_net`, trained on real digits only) assigns to the requested digit, and the
Frechet distance in that classifier's 128-d features against the MNIST train split. `curve`: the same FD for each
snapshot of a run. Results are appended to benchmarks/results/transformers_dit.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from cpu_budget import meta, preset_config, record, train_preset_command

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "transformers_dit.json"

# DiT candidates of the ablation (network fields over the mnist-dit preset of 2026-12-07: p4, h128, d6, 4 heads)
CANDIDATES = {
    "old mnist-dit (p4 h128 d6)": {},
    "p4 h128 d6 + out_conv + qk_norm": dict(out_conv=True, qk_norm=True),
    "+ class_embed_std 1 + time_embed_init xavier": dict(out_conv=True, qk_norm=True, class_embed_std=1.0,
                                                         time_embed_init="xavier"),
    "+ class/time init + mlp_conv": dict(out_conv=True, qk_norm=True, class_embed_std=1.0, time_embed_init="xavier",
                                         mlp_conv=True),
    "+ class init + long_skip": dict(out_conv=True, qk_norm=True, class_embed_std=1.0, long_skip=True),
    "p4 h192 d6, 6 heads": dict(hidden_size=192, num_heads=6),
    "p4 h256 d6": dict(hidden_size=256),
    "p4 h128 d10": dict(depth=10),
    "p2 h128 d6 (196 tokens)": dict(patch_size=2),
    "p7 h192 d6, 6 heads (16 tokens)": dict(patch_size=7, hidden_size=192, num_heads=6),
}


def _meta(argv) -> dict:
    return meta("transformers_dit.py", argv)


def _record(key: str, value: dict) -> None:
    record(RESULTS, key, value)


_config = preset_config


def _cpu_per_step(config, steps: int = 4) -> float:
    from noisecraft.training.trainer import Trainer

    trainer = Trainer(config, "/tmp/noisecraft-ditq-speed", progress=False)
    trainer.train_step()  # warm-up
    t0 = time.process_time()
    for _ in range(steps):
        trainer.train_step()
    return (time.process_time() - t0) / steps


def cmd_speed(args, argv) -> None:
    from noisecraft.models.dit import count_parameters
    from noisecraft.training.repa import REPAConfig

    torch.set_num_threads(1)
    base = _config("mnist-dit", ["data.limit=512"])
    rows = {}
    for name, fields in CANDIDATES.items():
        cfg = replace(base, network=replace(get_old_dit(base), **fields))
        rows[name] = {"cpu_s_per_step": _cpu_per_step(cfg), "params": count_parameters(_net(cfg))}
        if name.startswith("p4 h128 d6 +"):
            repa = replace(cfg, train=replace(cfg.train, repa=REPAConfig(encoder="mnist")))
            rows[name + " + REPA"] = {"cpu_s_per_step": _cpu_per_step(repa), "params": rows[name]["params"]}
    unet = _config("mnist-class", ["data.limit=512"])
    rows["U-Net mnist-class"] = {"cpu_s_per_step": _cpu_per_step(unet), "params": count_parameters(_net(unet))}
    for name, row in rows.items():
        print(f"{name}: {row['params']} parameters, {row['cpu_s_per_step']:.3f} CPU-s/step", flush=True)
    _record("speed", {"rows": rows, "meta": _meta(argv)})


def get_old_dit(cfg):
    """The DiT fields of the mnist-dit preset before issue 26 (p4, h128, d6, 4 heads, as DIT_PRESETS['mnist'])."""
    from noisecraft.models.dit import DIT_PRESETS

    return replace(DIT_PRESETS["mnist"], patch_size=4, hidden_size=128, depth=6, num_heads=4, num_classes=10)


def _net(cfg):
    from noisecraft.build import adapt_config, build_denoiser

    return build_denoiser(adapt_config(cfg, (1, 28, 28))).net


def cmd_train(args, argv) -> None:
    train_preset_command("transformers_dit.py", RESULTS, args, argv, args.snapshot_every)


def _score(run, num: int, guidance: float, batch: int):
    """(images, requested-class rate, FD in MNIST features) of `num` class-guided samples of `run`."""
    from noisecraft.eval import fd, get_extractor, load_reference
    from noisecraft.eval.mnist_net import load_mnist_classifier
    from noisecraft.pipelines import Request, generate, load

    loaded = load(run)
    wanted = torch.arange(num) % 10
    request = Request(class_ids=tuple(wanted.tolist()), guidance=guidance, sampler="dpmpp_2m", steps=20,
                      step_schedule="karras", seed=0, num=num, batch_size=batch)
    t0 = time.monotonic()
    with torch.no_grad():
        images = generate(loaded, request).images.clamp(-1, 1)
        predicted = load_mnist_classifier().eval()(images)[1].argmax(1)
    seconds = time.monotonic() - t0
    extractor = get_extractor("mnist")
    ref = load_reference("mnist", extractor, split="train")
    rate = float((predicted == wanted).float().mean())
    return images, rate, fd(extractor(images), ref.features), loaded.step, seconds


def cmd_eval(args, argv) -> None:
    from noisecraft.viz import grid_image, save_png

    torch.set_num_threads(1)
    for run in args.runs:
        images, rate, dist, step, seconds = _score(run, args.num, args.guidance, args.batch_size)
        print(f"{run} (step {step}): class rate {rate:.4f}, FD {dist:.3f}, {seconds:.0f} s", flush=True)
        _record(f"eval {run} w={args.guidance:g} n={args.num}",
                {"run": run, "step": step, "class_rate": rate, "fd": dist, "num": args.num,
                 "guidance": args.guidance, "seconds": seconds, "meta": _meta(argv)})
        if args.grid:
            save_png(grid_image(images[:40], nrow=10), Path(args.grid), scale=2,
                     info={"run": run, "step": step, "guidance": args.guidance, "rows": "digits 0-9, 4 seeds"})


def cmd_curve(args, argv) -> None:
    torch.set_num_threads(1)
    snapshots = sorted((Path(args.run) / "snapshots").glob("step-*.safetensors"))
    rows = []
    for snap in snapshots:
        _, rate, dist, step, _ = _score(str(snap), args.num, args.guidance, args.batch_size)
        rows.append({"step": step, "class_rate": rate, "fd": dist})
        print(json.dumps(rows[-1]), flush=True)
    _record(f"curve {args.run} w={args.guidance:g} n={args.num}", {"rows": rows, "meta": _meta(argv)})


def cmd_sigma_mse(args, argv) -> None:
    """Per-pixel MSE of D(x0 + sigma n; true label) against x0 on 500 MNIST test digits, by sigma (EMA weights)."""
    from noisecraft.data.datasets import load_dataset
    from noisecraft.pipelines import load

    torch.set_num_threads(1)
    ds = load_dataset("mnist", split="test", limit=500)
    x0, labels = ds.images, ds.labels
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    rows = {}
    for run in args.runs:
        loaded, row = load(run), {}
        with torch.no_grad():
            for s in SIGMAS:
                sigma = torch.full((len(x0),), s, dtype=torch.float64)
                row[s] = (loaded.denoiser(x0 + s * noise, sigma, {"class_labels": labels}) - x0).square().mean().item()
        rows[f"{run} (step {loaded.step})"] = row
        print(f"{run} (step {loaded.step}): " + " ".join(f"{s:g}: {v:.4f}" for s, v in row.items()), flush=True)
    _record("sigma-mse " + " ".join(args.runs), {"rows": rows, "meta": _meta(argv)})


def cmd_class_gain(args, argv) -> None:
    """Train --steps steps and every 50 report, on 256 fixed training digits and noises, the raw network's loss
    with the true labels and its relative increase with wrong labels (how much the model uses the class)."""
    from noisecraft.core.losses import denoising_loss
    from noisecraft.training.trainer import Trainer

    torch.set_num_threads(1)
    cfg = _config(args.preset, args.overrides)
    trainer = Trainer(replace(cfg, train=replace(cfg.train, minutes=None, steps=10**9)), "/tmp/noisecraft-ditq-gain",
                      progress=False)
    g = torch.Generator().manual_seed(123)
    idx = torch.randperm(len(trainer.images), generator=g)[:256]
    x0, labels = trainer.images[idx], trainer.data.labels[idx]
    wrong = (labels + 1 + torch.randint(0, 9, labels.shape, generator=g)) % 10
    noise, log = torch.randn(x0.shape, generator=g), []
    for step in range(args.steps + 1):
        if step % 50 == 0:
            trainer.net.eval()
            row = {"step": step}
            with torch.no_grad():
                for s in (0.3, 1.0, 3.0):
                    sigma = torch.full((256,), s, dtype=torch.float64)
                    true, bad = (denoising_loss(trainer.denoiser, x0, sigma, noise, {"class_labels": y}).mean().item()
                                 for y in (labels, wrong))
                    row[f"sigma {s:g}"] = {"loss": true, "wrong_label_increase": bad / true - 1}
            log.append(row)
            print(json.dumps(row), flush=True)
        if step < args.steps:
            trainer.train_step()
    _record(f"class-gain {args.preset} {' '.join(args.overrides)}", {"rows": log, "meta": _meta(argv)})


SIGMAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("speed", help="CPU seconds per training step of the candidate configs (1 thread)")
    t = sub.add_parser("train", help="train a preset for a budget of CPU minutes (1 thread)")
    t.add_argument("--preset", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--cpu-minutes", type=float, default=10.0)
    t.add_argument("--snapshot-every", type=int, default=0, help="copy the checkpoint every N steps (0: never)")
    t.add_argument("overrides", nargs="*", help="section.field=value config overrides")
    for name in ("eval", "curve"):
        e = sub.add_parser(name)
        if name == "eval":
            e.add_argument("runs", nargs="+")
            e.add_argument("--grid", help="PNG of the first 40 samples")
        else:
            e.add_argument("run")
        e.add_argument("--num", type=int, default=1000)
        e.add_argument("--guidance", type=float, default=2.0)
        e.add_argument("--batch-size", type=int, default=100)
    m = sub.add_parser("sigma-mse", help="denoising MSE by noise level of runs (EMA weights, MNIST test digits)")
    m.add_argument("runs", nargs="+")
    c = sub.add_parser("class-gain", help="train N steps; how much the raw network's loss uses the class label")
    c.add_argument("--preset", required=True)
    c.add_argument("--steps", type=int, default=300)
    c.add_argument("overrides", nargs="*", help="section.field=value config overrides")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    {"speed": cmd_speed, "train": cmd_train, "eval": cmd_eval, "curve": cmd_curve, "sigma-mse": cmd_sigma_mse,
     "class-gain": cmd_class_gain}[args.cmd](args, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
