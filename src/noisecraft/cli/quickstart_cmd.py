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
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="training arithmetic: bf16 autocast (float32 weights) or fp32; auto (default) takes bf16 "
                        "where the device computes it natively (a CPU with AMX, a bf16 GPU), else fp32")


def run(args) -> int:
    import time
    from dataclasses import replace
    from pathlib import Path

    from noisecraft.cli.train_cmd import train_and_preview
    from noisecraft.presets import get_preset
    from noisecraft.training.precision import fast_bf16

    config = get_preset("mnist")
    if args.minutes is not None:
        config = replace(config, train=replace(config.train, minutes=args.minutes))
    bf16 = args.precision == "bf16" or (args.precision == "auto" and fast_bf16(args.device))
    if bf16:  # channels-first: PyTorch's CPU bfloat16 GroupNorm is slow in channels-last (docs/quickstart.md)
        config = replace(config, train=replace(config.train, bf16=True),
                         network=replace(config.network, channels_last=False))
    print(f"noisecraft quickstart: training a {config.name} U-Net on the embedded MNIST for "
          f"{config.train.minutes:g} minutes on {args.device} ({'bf16 autocast' if bf16 else 'fp32'}) -> {args.out}")
    t0 = time.monotonic()
    result = train_and_preview(config, args.out, resume=False, device=args.device)
    print(f"done in {time.monotonic() - t0:.0f} s: {result['step']} steps, final loss {result['loss']:.4f}\n"
          f"  samples:    {Path(args.out) / 'samples.png'}\n  loss curve: {Path(args.out) / 'loss.png'}\n"
          f"  more:       noisecraft sample --checkpoint {args.out} --num 64 --out more.png")
    return 0
