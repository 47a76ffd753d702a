"""Training throughput of noisecraft's UNet against diffusers' UNet2DModel of the same shape.

One training step = forward + MSE loss + backward + AdamW step, on random data, for both
networks built with the same widths, levels, residual blocks per level, attention levels, head
width, GroupNorm groups and time conditioning (scale-shift or additive). The two models are timed
interleaved in one process (warm-up first, then the median of N steps each, the order of the two
alternating every step) so that load from other processes hits both alike; `--repeats R` repeats
the timed block and reports the median over repeats.

    python benchmarks/train_throughput.py                 # both settings, 2 threads
    python benchmarks/train_throughput.py --steps 30 --settings mnist

Prints a table and writes the figures as JSON (default benchmarks/results/train_throughput.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from noisecraft.models.unet import UNET_PRESETS, UNet, UNetConfig

# name -> (config, batch size, spatial size)
SETTINGS: dict[str, tuple[UNetConfig, int, int]] = {
    "mnist": (UNET_PRESETS["mnist"], 64, 28),
    "cifar": (UNetConfig(in_channels=3, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=2,
                         attention_levels=(2,), head_channels=32, norm_groups=8), 32, 32),
}


def diffusers_twin(cfg: UNetConfig, size: int):
    """diffusers.UNet2DModel with the same widths, levels, blocks, attention and conditioning."""
    from diffusers import UNet2DModel

    attn = set(cfg.attention_levels)
    down = [("AttnDownBlock2D" if lv in attn else "DownBlock2D") for lv in range(len(cfg.channel_mult))]
    up = [("AttnUpBlock2D" if lv in attn else "UpBlock2D") for lv in reversed(range(len(cfg.channel_mult)))]
    return UNet2DModel(
        sample_size=size,
        in_channels=cfg.in_channels,
        out_channels=cfg.output_channels,
        block_out_channels=cfg.widths,
        layers_per_block=cfg.num_res_blocks,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        attention_head_dim=cfg.head_channels,
        norm_num_groups=cfg.norm_groups,
        attn_norm_num_groups=cfg.norm_groups,  # GroupNorm in the mid attention too, as in ours
        norm_eps=1e-5,
        resnet_time_scale_shift="scale_shift" if cfg.scale_shift_norm else "default",
        add_attention=cfg.mid_attention,
        time_embedding_dim=cfg.time_embed_mult * cfg.base_channels,
        dropout=cfg.dropout,
    )


def make_step(model, forward, batch: int, channels: int, size: int, generator: torch.Generator):
    """A closure running one training step on fresh random data; returns its wall time in s."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> float:
        x0 = torch.randn(batch, channels, size, size, generator=generator)
        noise = torch.randn(batch, channels, size, size, generator=generator)
        t = torch.randint(0, 1000, (batch,), generator=generator)
        x_t = x0 + noise  # the arithmetic of the noising does not matter for timing
        start = time.perf_counter()
        loss = F.mse_loss(forward(model, x_t, t), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    return step


def _ours(model, x, t):
    return model(x, t.float())


def _theirs(model, x, t):
    return model(x, t).sample


def _theirs_cl(model, x, t):
    return model(x.contiguous(memory_format=torch.channels_last), t).sample


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def time_interleaved(steps: dict, n: int, warmup: int) -> dict[str, list[float]]:
    """Run the step closures in turn (order alternating every step); the times after warm-up."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    order = list(steps)
    for i in range(warmup + n):
        for k in order if i % 2 == 0 else order[::-1]:
            dt = steps[k]()
            if i >= warmup:
                times[k].append(dt)
    return times


def run_setting(name: str, cfg: UNetConfig, batch: int, size: int, args) -> dict:
    torch.manual_seed(0)
    theirs = diffusers_twin(cfg, size)
    if args.diffusers_channels_last:
        theirs = theirs.to(memory_format=torch.channels_last)
    models = {"noisecraft": UNet(cfg), "diffusers": theirs}
    forwards = {"noisecraft": _ours, "diffusers": _theirs_cl if args.diffusers_channels_last else _theirs}
    gen = torch.Generator().manual_seed(0)
    steps = {k: make_step(m.train(), forwards[k], batch, cfg.in_channels, size, gen) for k, m in models.items()}
    repeats = [time_interleaved(steps, args.steps, args.warmup if r == 0 else 1) for r in range(args.repeats)]
    med = {k: statistics.median(statistics.median(rep[k]) for rep in repeats) for k in models}
    ratios = [statistics.median(rep["diffusers"]) / statistics.median(rep["noisecraft"]) for rep in repeats]
    return {
        "setting": name,
        "batch": batch,
        "shape": [cfg.in_channels, size, size],
        "config": asdict(cfg),
        "params": {k: n_params(m) for k, m in models.items()},
        "median_step_s": med,
        "images_per_s": {k: batch / v for k, v in med.items()},
        "speedup": statistics.median(ratios),
        "speedup_per_repeat": ratios,
        "step_times_s": repeats,
    }


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__


def print_table(results: list[dict]) -> None:
    head = f"{'setting':<8} {'batch x shape':<16} {'params ours':>12} {'params diff.':>12} " \
           f"{'ours img/s':>11} {'diff. img/s':>11} {'ratio':>6}"
    print(head)
    print("-" * len(head))
    for r in results:
        shape = f"{r['batch']}x" + "x".join(map(str, r["shape"]))
        ips, p = r["images_per_s"], r["params"]
        print(f"{r['setting']:<8} {shape:<16} {p['noisecraft']:>12,} {p['diffusers']:>12,} "
              f"{ips['noisecraft']:>11.1f} {ips['diffusers']:>11.1f} {r['speedup']:>5.2f}x")
        if len(r["speedup_per_repeat"]) > 1:
            print(f"{'':<8} ratio per repeat: " + ", ".join(f"{x:.2f}" for x in r["speedup_per_repeat"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model first")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=1,
                        help="repeat the timed block; the median over repeats is reported")
    parser.add_argument("--no-channels-last", action="store_true", help="time our UNet with channels_last=False")
    parser.add_argument("--diffusers-channels-last", action="store_true",
                        help="also run diffusers in channels-last layout (not its default)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_throughput.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for name in args.settings:
        cfg, batch, size = SETTINGS[name]
        cfg = replace(cfg, channels_last=not args.no_channels_last)
        results.append(run_setting(name, cfg, batch, size, args))
        print_table(results[-1:])
    print()
    print_table(results)
    meta = {"torch": torch.__version__, "diffusers": _diffusers_version(), "threads": args.threads,
            "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
            "diffusers_channels_last": args.diffusers_channels_last,
            "cpu": platform.processor() or platform.machine(), "load_avg": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
