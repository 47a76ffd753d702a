"""Handlers of the `noisecraft` sub-commands (imported only when a command runs)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch

from noisecraft.config import apply_overrides, from_dict, load_file, to_dict
from noisecraft.errors import NoisecraftError
from noisecraft.training.config import RunConfig


# ------------------------------------------------------------------------------------------- config
def _run_config(args) -> RunConfig:
    from noisecraft.presets import get_preset

    if args.preset:
        data = to_dict(get_preset(args.preset))
    else:
        data = load_file(args.config)
    data = apply_overrides(data, args.overrides)
    config = from_dict(RunConfig, data, "config")
    train = config.train
    if args.steps is not None:
        train = replace(train, steps=args.steps, minutes=args.minutes)
    elif args.minutes is not None:
        train = replace(train, minutes=args.minutes, steps=10**9)
    return replace(config, train=train)


# ------------------------------------------------------------------------------------------- train
def _train(config: RunConfig, out: str, *, resume: bool, device: str) -> dict:
    from noisecraft.training.distributed import teardown
    from noisecraft.training.trainer import Trainer

    try:  # under torchrun / accelerate launch the Trainer joins the process group
        trainer = Trainer(config, out, resume=resume, device=device)
        result = trainer.run()
        if trainer.dist.is_main:
            _after_training(trainer)
    finally:
        teardown()
    return result


def _after_training(trainer) -> None:
    """loss.png and a preview of samples from the EMA weights."""
    from noisecraft.viz import plot_loss

    out = trainer.out_dir
    if trainer.log:
        plot_loss(trainer.log, out / "loss.png", title=f"{trainer.config.name}: training loss")
    from noisecraft.prompting import preview_request

    num = trainer.config.sample.num
    request = preview_request(trainer.config, trainer.data, num)  # conditional models: classes / captions
    _write_samples(out, out / "samples.png", num=num, seed=0, request=request)


def quickstart(args) -> int:
    from noisecraft.presets import get_preset

    config = get_preset("mnist")
    if args.minutes is not None:
        config = replace(config, train=replace(config.train, minutes=args.minutes))
    print(f"noisecraft quickstart: training a {config.name} U-Net on the embedded MNIST for "
          f"{config.train.minutes:g} minutes on {args.device} -> {args.out}")
    t0 = time.monotonic()
    result = _train(config, args.out, resume=False, device=args.device)
    print(f"done in {time.monotonic() - t0:.0f} s: {result['step']} steps, final loss {result['loss']:.4f}\n"
          f"  samples:    {Path(args.out) / 'samples.png'}\n  loss curve: {Path(args.out) / 'loss.png'}\n"
          f"  more:       noisecraft sample --checkpoint {args.out} --num 64 --out more.png")
    return 0


def train(args) -> int:
    config = _run_config(args)
    result = _train(config, args.out, resume=args.resume, device=args.device)
    loss = "n/a" if result["loss"] is None else f"{result['loss']:.4f}"
    print(f"trained to step {result['step']} (loss {loss}, {result['bad_steps']} skipped steps) -> {args.out}")
    return 0


def presets(args) -> int:
    from noisecraft.presets import PRESETS

    for name, cfg in PRESETS.items():
        net = f"{cfg.model}"
        d = cfg.diffusion
        minutes = f"{cfg.train.minutes:g} min" if cfg.train.minutes else f"{cfg.train.steps} steps"
        print(f"{name:12s} data={cfg.data.dataset:10s} net={net:5s} schedule={d.schedule:8s} "
              f"prediction={d.prediction:5s} {minutes}")
    return 0


# ------------------------------------------------------------------------------------------ sample
def _sampling_plan(loaded, sampler=None, steps=None, schedule=None):
    from noisecraft.samplers import resolve_alias
    from noisecraft.schedules import get_sigmas

    s = loaded.config.sample
    name, implied = resolve_alias(sampler or s.sampler)
    kind = schedule or implied or s.step_schedule
    sigmas = get_sigmas(loaded.denoiser.schedule, steps or s.steps, kind)
    return name, kind, sigmas


def _write_samples(checkpoint, out: Path, *, num: int, seed: int, sampler=None, steps=None, schedule=None,
                   batch_size: int = 64, options: dict | None = None, use_ema: bool = True, device: str = "cpu",
                   callback=None, request=None) -> Path:
    from noisecraft.pipeline import generate, load_denoiser
    from noisecraft.prompting import Request, conditioned, describe_request
    from noisecraft.viz import save_grid, save_points

    loaded = load_denoiser(checkpoint, use_ema=use_ema, device=device)
    name, kind, sigmas = _sampling_plan(loaded, sampler, steps, schedule)
    request = request or Request()
    denoiser, cond = conditioned(loaded, request, num, seed)  # (classifier-free guided) denoiser and per-image cond
    if callback is not None and loaded.autoencoder is not None:  # latent models: trajectory frames as images
        callback = _decoding_callback(loaded, callback)
    images = generate(denoiser, sigmas, loaded.data_shape, num=num, seed=seed, sampler=name, cond=cond,
                      batch_size=batch_size, callback=callback, device=device, **(options or {}))
    images = loaded.to_images(images)  # latent models: decoded through their autoencoder
    info = {"sampler": name, "steps": len(sigmas) - 1, "step_schedule": kind, "seed": seed, "num": num,
            "model": loaded.config.name, "model_step": loaded.step, "ema": use_ema, "options": options or {},
            "conditioning": describe_request(request)}
    if len(loaded.data_shape) == 1:
        save_points(images, out, title=f"{loaded.config.name}: {num} samples")
        return out
    params = (f"Steps: {info['steps']}, Sampler: {name}, Schedule type: {kind}, Seed: {seed}, "
              f"Size: {images.shape[-1]}x{images.shape[-2]}, Model: {loaded.config.name}, "
              f"Model step: {loaded.step}")
    if request.prompts:  # A1111 layout: prompt, negative prompt, then the settings line
        negative = f"\nNegative prompt: {request.negative_prompt}" if request.negative_prompt else ""
        params = f"{request.prompts[0]}{negative}\n{params}"
    if request.guidance is not None:
        params += f", CFG scale: {request.guidance:g}"
    out = Path(out)
    if out.suffix.lower() == ".png":
        save_grid(images, out, parameters=params, info=info)
    else:
        for i, img in enumerate(images):
            save_grid(img[None], out / f"{seed + i:06d}.png", scale=1, parameters=params.replace(
                f"Seed: {seed}", f"Seed: {seed + i}"), info={**info, "seed": seed + i, "num": 1})
    return out


def sample(args) -> int:
    options = {} if args.eta is None else {"eta": args.eta}
    frames = []

    def record(info):
        frames.append((info["sigma"], info["x"][0].float().cpu(), info["denoised"][0].float().cpu()))

    from noisecraft.prompting import Request

    request = Request(prompts=None if args.prompt is None else (args.prompt,), negative_prompt=args.negative_prompt,
                      class_ids=None if args.class_ids is None else tuple(args.class_ids), guidance=args.guidance,
                      guidance_interval=None if args.guidance_interval is None else tuple(args.guidance_interval),
                      guidance_rescale=args.guidance_rescale)
    out = _write_samples(args.checkpoint, Path(args.out), num=args.num, seed=args.seed, sampler=args.sampler,
                         steps=args.steps, schedule=args.schedule, batch_size=args.batch_size, options=options,
                         use_ema=not args.no_ema, device=args.device,
                         callback=record if args.trajectory else None, request=request)
    print(f"wrote {out}")
    if args.trajectory:
        from noisecraft.viz import save_trajectory

        first = frames[: len(frames) if args.num <= args.batch_size else None]
        save_trajectory(_first_batch(first), args.trajectory)
        print(f"wrote {args.trajectory}")
    return 0


def _decoding_callback(loaded, callback):
    """Latent diffusion: pass the callback x_t and the x0 estimate of each batch's first sample decoded through
    the autoencoder (the only one a trajectory shows), so trajectory frames are images, not latents. x_t is
    decoded at unit scale, x_t / sqrt(1 + sigma^2), and scaled back, as viz.trajectory_frames divides by it."""
    def decoded(info):
        s = (1 + info["sigma"] ** 2) ** 0.5
        x = loaded.to_images(info["x"][:1].float() / s) * s
        callback({**info, "x": x, "denoised": loaded.to_images(info["denoised"][:1].float())})

    return decoded


def _first_batch(frames):
    """The callback saw every batch; keep the steps of the first (image 0's batch)."""
    out, last_sigma = [], float("inf")
    for f in frames:
        if f[0] >= last_sigma:
            break
        out.append(f)
        last_sigma = f[0]
    return out


# ----------------------------------------------------------------------------------------- forward
def forward(args) -> int:
    from noisecraft.data import load_dataset, load_image
    from noisecraft.schedules import build_schedule, get_sigmas
    from noisecraft.viz import grid_image, save_png

    schedule = build_schedule(args.schedule)
    if args.image:
        x0 = load_image(args.image, resolution=args.resolution)
    else:
        x0 = load_dataset("mnist", limit=1).images[0]
    sigmas = get_sigmas(schedule, args.num - 1, "uniform").flip(0)  # 0, ..., sigma_max
    gen = torch.Generator().manual_seed(args.seed)
    noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    alpha = torch.rsqrt(1 + sigmas**2)  # VP view: x_t = alpha x0 + sigma_t n, unit scale to look at
    frames = [(alpha[i] * (x0.double() + sigmas[i] * noise)).float() for i in range(len(sigmas))]
    save_png(grid_image(torch.stack(frames), nrow=len(frames)), args.out, scale=max(1, 112 // x0.shape[-1]),
             info={"schedule": args.schedule, "sigmas": [round(float(s), 5) for s in sigmas]})
    print(f"wrote {args.out} (sigma = {', '.join(f'{float(s):.3g}' for s in sigmas)})")
    return 0


__all__ = ["forward", "presets", "quickstart", "sample", "train", "NoisecraftError"]
