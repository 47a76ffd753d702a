"""The handler of `noisecraft sample` (imported only when it runs; the parser is in cli/sample_cmd.py).
Also used by `noisecraft train` / `quickstart` for the preview samples."""

from __future__ import annotations

from pathlib import Path

from noisecraft.errors import NoisecraftError


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
    from noisecraft.samplers import check_options
    from noisecraft.viz import save_grid, save_points

    loaded = load_denoiser(checkpoint, use_ema=use_ema, device=device)
    name, kind, sigmas = _sampling_plan(loaded, sampler, steps, schedule)
    options = check_options(name, options)  # text from --option KEY=VALUE -> the declared types
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
    frames = []

    def record(info):
        frames.append((info["sigma"], info["x"][0].float().cpu(), info["denoised"][0].float().cpu()))

    from noisecraft.prompting import Request

    request = Request(prompts=None if args.prompt is None else (args.prompt,), negative_prompt=args.negative_prompt,
                      class_ids=None if args.class_ids is None else tuple(args.class_ids), guidance=args.guidance,
                      guidance_interval=None if args.guidance_interval is None else tuple(args.guidance_interval),
                      guidance_rescale=args.guidance_rescale)
    out = _write_samples(args.checkpoint, Path(args.out), num=args.num, seed=args.seed, sampler=args.sampler,
                         steps=args.steps, schedule=args.step_schedule, batch_size=args.batch_size,
                         options=args.options, use_ema=not args.no_ema, device=args.device,
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


__all__ = ["sample", "NoisecraftError"]
