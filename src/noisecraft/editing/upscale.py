"""Super-resolution with a trained SR run, and Imagen-style cascades.

- `upscale(run, low_res_images, request)`: samples p(y | x) of an SR3 model (Saharia et al. 2022, "Image
  super-resolution via iterative refinement", Sec. 2) whose condition is the "low-res" one
  (`noisecraft.conditions.low_res`: the bicubic upsampling of x concatenated to the noisy y), with the
  conditioning image augmented at a fixed level s (Ho et al. 2022, "Cascaded diffusion models", Sec. 4.2 /
  Algorithm 1: z_s = sqrt(abar(s)) z + sqrt(1 - abar(s)) eps, s given to the network). Every sampler works, and
  classifier-free guidance when the SR run has another guidable condition (a class or a prompt): the
  low-resolution image is in both branches.
- `cascade(base_run, sr_runs, request)`: a base model at the lowest resolution, then each SR stage in turn on
  the previous stage's samples (Ho et al. 2022, Sec. 3; Saharia et al. 2022b, Imagen, Sec. 2.5); image i keeps
  its seed seed + i along the chain, so an image does not depend on how many are drawn.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from noisecraft.errors import NoisecraftError

NAME = "low-res"


def sr_condition(run):
    """The run's low-res condition; NoisecraftError when the run is not a super-resolution model."""
    c = run.conditions.get(NAME) if run.conditions else None
    if c is None:
        raise NoisecraftError(f"model {run.config.name!r} is not a super-resolution model (conditioning.conditions "
                              f"must contain {NAME!r}, e.g. preset glyphs-sr-32)")
    return c


def low_res_shape(run) -> tuple[int, int, int]:
    """(C, h, w) of the low-resolution images an SR run takes: its image size divided by its factor."""
    c = sr_condition(run)
    return (c.channels, *c.low_size())


def check_low_res(run, images, num: int | None = None) -> torch.Tensor:
    """images (C, h, w) or (N, C, h, w) in [-1, 1] -> (N, C, h, w) float32; NoisecraftError naming the expected
    size, channels and range otherwise. num: the number of outputs (N must then be 1 or num)."""
    want = low_res_shape(run)
    images = torch.as_tensor(images)
    batch = images[None] if images.ndim == 3 else images
    c = sr_condition(run)
    if batch.ndim != 4 or tuple(batch.shape[1:]) != want:
        size = f"{want[1]}x{want[2]}"
        raise NoisecraftError(f"low-resolution image has shape {tuple(images.shape)}; model {run.config.name!r} "
                              f"upscales {want[0]}-channel {size} images (C, h, w) = {want} by {c.factor} to "
                              f"{c.size[0]}x{c.size[1]}")
    if num is not None and batch.shape[0] not in (1, num):
        raise NoisecraftError(f"{batch.shape[0]} low-resolution images for {num} outputs; give 1 or {num}")
    batch = batch.float()
    if not torch.isfinite(batch).all():
        raise NoisecraftError("low-resolution image has non-finite values (NaN or inf)")
    if batch.min() < -1 - 1e-4 or batch.max() > 1 + 1e-4:
        raise NoisecraftError(f"low-resolution image values must be in [-1, 1]; got [{float(batch.min()):.3g}, "
                              f"{float(batch.max()):.3g}]")
    return batch.clamp(-1, 1)


def upscale(run, low_res_images, request=None, *, aug_level: float | None = None, callback=None):
    """Super-resolve low_res_images ((C, h, w), or (N, C, h, w) with N = 1 or request.num) with an SR run
    (module docstring). request: the sampler, steps, seed, num, other conditions and guidance (None: defaults,
    num = N). aug_level: the augmentation level s in [0, 1] at sampling (None: the run's
    conditioning.low_res_aug_sample; a loaded Stable Diffusion upscaler takes its integer noise level, default 20).
    Image i is drawn from seed + i, its augmentation noise too. Returns a
    pipelines.Generation of (num, C, H, W) images in [-1, 1]."""
    from noisecraft.pipelines import Generation, Request, generate

    c = sr_condition(run)
    images = torch.as_tensor(low_res_images)
    n_given = 1 if images.ndim == 3 else (images.shape[0] if images.ndim == 4 else 1)
    request = request or Request(num=n_given)
    request.check()
    level = c.aug_sample if aug_level is None else c.checked_level(aug_level)
    low = check_low_res(run, images, request.num)
    if request.conditions and NAME in request.conditions:
        raise NoisecraftError(f"give the low-resolution image as the argument of upscale, not request.conditions"
                              f"[{NAME!r}]")
    parts, samples, parameters = [], [], None
    # one generate call per batch: the low-res image is per image and in both branches of guidance, so each call
    # holds exactly one network batch; seeds continue (image i: seed + i, as in one call)
    step = request.batch_size
    for start in range(0, request.num, step):
        n = min(step, request.num - start)
        chunk = low if low.shape[0] == 1 else low[start:start + n]
        conditions = {**(request.conditions or {}), NAME: {"image": chunk, "level": level}}
        sub = replace(request, conditions=conditions, num=n, seed=request.seed + start,
                      prompts=_slice(request.prompts, start, n, request.num),
                      class_ids=_slice(request.class_ids, start, n, request.num))
        out = generate(run, sub, callback=callback)
        parts.append(out.images)
        samples.append(out.samples)
        parameters = out.parameters
    parameters = {**parameters, "seed": request.seed, "num": request.num, "conditioning": request.describe(),
                  "upscale": {"factor": c.factor, "aug_level": level, "from": list(low.shape[-2:])}}
    return Generation(torch.cat(parts), [request.seed + i for i in range(request.num)], parameters,
                      torch.cat(samples))


def _slice(values, start: int, n: int, num: int):
    """Per-image prompts / class ids of images start .. start + n - 1 (one entry: the same for all)."""
    if values is None or len(values) != num or num == 1:
        return values
    return tuple(values[start:start + n])


def cascade(base_run, sr_runs, request=None, *, aug_levels=None, sr_requests=None, callback=None):
    """An Imagen-style cascade: `base_run` draws request.num images at its resolution, then each run of sr_runs
    upscales the previous stage's images (module docstring). aug_levels: one level per SR stage (None: each
    run's default); sr_requests: one Request per SR stage for its sampler, steps and conditions (None: the base
    request's seed and num with the SR run's defaults). Returns (final Generation, [Generation per stage])."""
    from noisecraft.pipelines import Request, generate

    request = request or Request()
    sr_runs = list(sr_runs)
    if not sr_runs:
        raise NoisecraftError("cascade needs at least one super-resolution run")
    aug_levels = [None] * len(sr_runs) if aug_levels is None else list(aug_levels)
    sr_requests = [None] * len(sr_runs) if sr_requests is None else list(sr_requests)
    if len(aug_levels) != len(sr_runs) or len(sr_requests) != len(sr_runs):
        raise NoisecraftError(f"cascade: {len(sr_runs)} SR stages but {len(aug_levels)} aug levels and "
                              f"{len(sr_requests)} requests")
    stages = [generate(base_run, request, callback=callback)]
    shape = tuple(stages[0].images.shape[1:])
    for i, (run, level, sub) in enumerate(zip(sr_runs, aug_levels, sr_requests)):
        want = low_res_shape(run)
        if shape != want:
            raise NoisecraftError(f"cascade stage {i + 1} ({run.config.name!r}) upscales {want} images; the previous "
                                  f"stage gives {shape}")
        sub = Request(num=request.num, seed=request.seed) if sub is None else \
            replace(sub, num=request.num, seed=request.seed)
        stages.append(upscale(run, stages[-1].images.clamp(-1, 1), sub, aug_level=level, callback=callback))
        shape = tuple(stages[-1].images.shape[1:])
    return stages[-1], stages
