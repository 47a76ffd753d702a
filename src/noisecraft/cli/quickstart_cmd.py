"""`noisecraft quickstart`: train the `mnist` preset on the embedded MNIST for a few minutes, then write
samples, the loss curve, the config and the checkpoint."""

from __future__ import annotations

from noisecraft.cli.argtypes import positive_float


def add_parser(sub) -> None:
    p = sub.add_parser("quickstart", help="train a small U-Net on the embedded MNIST and write samples",
                       description="Train the `mnist` preset on the embedded MNIST for a few minutes on the CPU, "
                                   "then write DIR/samples.png, DIR/loss.png, DIR/config.json and the checkpoint.")
    p.add_argument("--minutes", type=positive_float, default=None, help="training time (default: the preset's, 8)")
    p.add_argument("--out", default="runs/quickstart", help="output directory (default: runs/quickstart)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def run(args) -> int:
    import time
    from dataclasses import replace
    from pathlib import Path

    from noisecraft.cli.train_cmd import train_and_preview
    from noisecraft.presets import get_preset

    config = get_preset("mnist")
    if args.minutes is not None:
        config = replace(config, train=replace(config.train, minutes=args.minutes))
    print(f"noisecraft quickstart: training a {config.name} U-Net on the embedded MNIST for "
          f"{config.train.minutes:g} minutes on {args.device} -> {args.out}")
    t0 = time.monotonic()
    result = train_and_preview(config, args.out, resume=False, device=args.device)
    print(f"done in {time.monotonic() - t0:.0f} s: {result['step']} steps, final loss {result['loss']:.4f}\n"
          f"  samples:    {Path(args.out) / 'samples.png'}\n  loss curve: {Path(args.out) / 'loss.png'}\n"
          f"  more:       noisecraft sample --checkpoint {args.out} --num 64 --out more.png")
    return 0
