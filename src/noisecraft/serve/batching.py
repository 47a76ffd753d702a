"""Dynamic batching: several requests for the same run with compatible settings sampled in one batch. The noise
of image j of a request with seed s comes from its own generator seeded s + j (`core.random.make_generators`,
as `pipelines.sample_batches`), so stacking requests along the batch dimension gives every image exactly the noise
and condition it has alone. The network's arithmetic is per image too, except that a backend may pick its kernels'
blocking by batch size (CPU oneDNN / MKL do), which can change the last bits of a float; the 8-bit pixels served
are then the same."""

from __future__ import annotations

from dataclasses import replace

import torch

from noisecraft.pipelines import Generation, Request

BATCHABLE_CONDITIONS = {"text", "class"}  # conditions that depend on no seed nor extra input


def batch_key(run, request: Request):
    """Requests with equal keys (not None) can share a batch; None: the request runs alone."""
    if request.conditions or any(c.name not in BATCHABLE_CONDITIONS for c in run.conditions):
        return None
    return (request.sampler, request.steps, request.step_schedule, tuple(sorted(request.options.items())),
            request.guidance, request.guidance_interval, request.guidance_rescale, request.negative_prompt,
            request.prompts is None, request.class_ids is None)


def _per_image(values, num: int):
    return None if values is None else tuple(values) * num if len(values) == 1 else tuple(values)


def merge(requests: list[Request]) -> Request:
    """One request for every image of `requests` (same key), prompts / classes given per image."""
    first = requests[0]
    total = sum(r.num for r in requests)
    prompts = None if first.prompts is None else sum((_per_image(r.prompts, r.num) for r in requests), ())
    classes = None if first.class_ids is None else sum((_per_image(r.class_ids, r.num) for r in requests), ())
    return replace(first, prompts=prompts, class_ids=classes, num=total, batch_size=total, seed=0)


def generate_together(run, requests: list[Request], *, callback=None) -> list[Generation]:
    """The generation of each of `requests` (same `batch_key`) from one stacked batch: x, the per-image generators
    and the condition concatenated along the batch dimension."""
    from noisecraft import samplers
    from noisecraft.pipelines import batch_cond, conditioned, plan

    for r in requests:
        conditioned(run, r)  # each request's own checks (its error names it, not the merged one)
    merged = merge(requests)
    denoiser, cond = conditioned(run, merged)
    p = plan(run, merged)
    gens, x = initial_noise(run, requests, float(p.sigmas[0]))
    fn = samplers.get(p.sampler)
    samples = fn(denoiser, x, p.sigmas, cond=batch_cond(cond, 0, merged.num, merged.num), generator=gens,
                 callback=callback, **p.options).cpu().float()
    images = run.to_images(samples)
    return split(run, requests, p, samples, images)


def initial_noise(run, requests: list[Request], sigma_max: float):
    """(the per-image generators, x_T (N, *data_shape)): image j of request r from a generator seeded r.seed + j."""
    from noisecraft.core.random import make_generators, randn_like

    gens = [g for r in requests for g in make_generators(r.seed, r.num, device=run.device)]
    total = sum(r.num for r in requests)
    return gens, randn_like(torch.empty(total, *run.data_shape, device=run.device), gens) * sigma_max


def split(run, requests, p, samples, images) -> list[Generation]:
    out, start = [], 0
    for r in requests:
        end = start + r.num
        parameters = {"sampler": p.sampler, "steps": len(p.sigmas) - 1, "step_schedule": p.step_schedule,
                      "options": p.options, "conditioning": r.describe(), "model": run.config.name,
                      "model_step": run.step, "ema": run.ema, "seed": r.seed, "num": r.num}
        out.append(Generation(images[start:end], [r.seed + i for i in range(r.num)], parameters,
                              samples[start:end]))
        start = end
    return out
