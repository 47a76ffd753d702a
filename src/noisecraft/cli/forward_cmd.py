"""`noisecraft forward`: the forward noising of a picture, x_t = alpha_t x0 + sigma_t n, as a strip of
frames, each labelled with its noise level (sigma, and t for discrete schedules)."""

from __future__ import annotations

import argparse

from noisecraft.cli.argtypes import positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("forward", help="show the forward noising of a picture",
                       description="Write x_t = alpha_t x0 + sigma_t n at several noise levels as an image strip, "
                                   "each frame labelled with its sigma (and t for discrete schedules).")
    p.add_argument("--image", help="a picture (default: the first MNIST digit)")
    p.add_argument("--noise-schedule", default="linear",
                   help="the training noise schedule: linear, scaled_linear, cosine, sigmoid, vp, ve, edm, flow "
                        "(default linear)")
    p.add_argument("--schedule", dest="noise_schedule", help=argparse.SUPPRESS)  # deprecated spelling
    p.add_argument("--num", type=positive_int, default=8, help="number of noise levels shown (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resolution", type=positive_int, default=None, help="resize the picture first")
    p.add_argument("--out", default="forward.png", help="output PNG")


def run(args) -> int:
    import torch

    from noisecraft.data import load_dataset, load_image
    from noisecraft.schedules import build_schedule, get_sigmas
    from noisecraft.viz import grid_image, label_columns, save_png, upscale

    schedule = build_schedule(args.noise_schedule)
    x0 = load_image(args.image, resolution=args.resolution) if args.image else load_dataset("mnist", limit=1).images[0]
    sigmas = get_sigmas(schedule, args.num - 1, "uniform").flip(0)  # 0, ..., sigma_max
    gen = torch.Generator().manual_seed(args.seed)
    noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    alpha = torch.rsqrt(1 + sigmas**2)  # VP view: x_t = alpha x0 + sigma_t n, unit scale to look at
    frames = [(alpha[i] * (x0.double() + sigmas[i] * noise)).float() for i in range(len(sigmas))]
    labels, timesteps = _labels(schedule, sigmas.tolist())
    grid = upscale(grid_image(torch.stack(frames), nrow=len(frames)), max(1, 112 // x0.shape[-1]))
    info = {"schedule": args.noise_schedule, "sigmas": [round(float(s), 5) for s in sigmas]}
    if timesteps:
        info["timesteps"] = timesteps
    save_png(label_columns(grid, labels), args.out, info=info)
    print(f"wrote {args.out} (sigma = {', '.join(f'{float(s):.3g}' for s in sigmas)})")
    return 0


def _labels(schedule, sigmas: list[float]) -> tuple[list[str], list | None]:
    """Per frame "sigma=..." and, for a discrete schedule, its timestep t (the data itself at sigma = 0)."""
    from noisecraft.viz import sigma_label

    if not hasattr(schedule, "sigma_to_t"):
        return [sigma_label(s) for s in sigmas], None
    ts = [None if s == 0 else round(float(schedule.sigma_to_t(s)), 1) for s in sigmas]
    return [sigma_label(s) + ("\n(data)" if t is None else f"\nt={t:g}") for s, t in zip(sigmas, ts)], ts
