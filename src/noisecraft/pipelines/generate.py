"""One generation path: a `Request` for a loaded `Run` -> images with their seeds and parameters.

    run = noisecraft.load("runs/scenes")
    out = generate(run, Request(prompts=("a small red circle left of a blue square",), guidance=3, num=16))
    out.images, out.seeds, out.parameters

The CLI's `sample`, the benchmarks and evaluation during training all call this. Steps:

1. `plan`: the sampler (name or alias, resolved once), its options checked against its declared ones, the
   step schedule and the sigmas of the run's noise schedule;
2. `conditioned`: the run's conditions build (cond, uncond) from the request; with guidance the denoiser is
   wrapped in classifier-free guidance (Ho & Salimans 2022, eq. 6), so every sampler works with it;
3. `sample_batches`: `num` samples in batches, image i from its own generator seeded seed + i (so an image
   does not depend on the batch size), then decoded through the autoencoder of a latent run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from noisecraft.core.random import make_generators, randn_like
from noisecraft.errors import NoisecraftError
from noisecraft.pipelines.request import MAX_NUM, Request


@dataclass
class Generation:
    images: torch.Tensor      # (num, *image shape) float32 on the CPU (decoded for a latent run)
    seeds: list[int]          # image i was drawn from seed + i
    parameters: dict          # sampler, steps, step schedule, options, conditioning, model and its step
    samples: torch.Tensor     # the sampler's outputs (a latent run's latents; else the images)

    def infotext(self, i: int = 0) -> str:
        """Image i's parameters in the AUTOMATIC1111 layout: prompt, negative prompt, then the settings line."""
        p, c = self.parameters, self.parameters["conditioning"]
        line = (f"Steps: {p['steps']}, Sampler: {p['sampler']}, Schedule type: {p['step_schedule']}, "
                f"Seed: {self.seeds[i]}, Size: {self.images.shape[-1]}x{self.images.shape[-2]}, "
                f"Model: {p['model']}, Model step: {p['model_step']}")
        if c.get("guidance") is not None:
            line += f", CFG scale: {c['guidance']:g}"
        if c.get("prompts"):
            prompts = c["prompts"]
            negative = f"\nNegative prompt: {c['negative_prompt']}" if c.get("negative_prompt") else ""
            line = f"{prompts[i if len(prompts) > 1 else 0]}{negative}\n{line}"
        return line


@dataclass(frozen=True)
class Plan:
    sampler: str              # the registered sampler name
    step_schedule: str
    sigmas: torch.Tensor      # (steps + 1,) decreasing, ending at 0
    options: dict             # the sampler's options, converted and checked


def plan(run, request: Request) -> Plan:
    """The sampler, its checked options, the step schedule and the sigmas of a request on a run."""
    from noisecraft import samplers
    from noisecraft.schedules import get_sigmas

    s = run.config.sample
    name, implied = samplers.resolve_alias(request.sampler or s.sampler)
    check_student_sampler(run, name)
    kind = request.step_schedule or implied or s.step_schedule
    options = samplers.check_options(name, dict(request.options)) if hasattr(samplers, "check_options") \
        else dict(request.options)
    sigmas = get_sigmas(run.denoiser.schedule, request.steps or s.steps, kind)
    return Plan(name, kind, sigmas, options)


def check_student_sampler(run, sampler: str) -> None:
    """A few-step student (config.distill) samples only with the samplers it was made for; else NoisecraftError."""
    student = getattr(run.config, "distill", None)
    if student is not None and sampler not in student.samplers():
        raise NoisecraftError(f"model {run.config.name!r} is a few-step student (distill method {student.method!r}); "
                              f"it samples with {', '.join(student.samplers())}, not {sampler!r} "
                              f"(e.g. --sampler consistency --steps 1, 2 or 4)")


def check_request(run, request: Request) -> None:
    """Raise NoisecraftError for a request the run cannot serve, naming what it can."""
    request.check()
    conds = run.conditions
    what = f"model {run.config.name!r} is " + (conds.describe() if conds else
                                                "an unconditional model; it takes no --prompt, --class or guidance")
    for field, condition, flag in (("prompts", "text", "--prompt"), ("negative_prompt", "text", "--negative-prompt"),
                                   ("class_ids", "class", "--class")):
        if getattr(request, field) is not None and conds.get(condition) is None:
            raise NoisecraftError(f"{flag} given, but {what}")
    conds.check_request(request)
    if request.guided:
        if not any(c.guidable for c in conds):
            raise NoisecraftError(f"guidance needs a conditional model, but {what}")
        if not any(c.given(request) for c in conds):
            flags = " or ".join(f for c, f in (("text", "--prompt"), ("class", "--class")) if conds.get(c)) or \
                "request.conditions"
            raise NoisecraftError(f"guidance needs a condition to guide towards: give {flags}")


def conditioned(run, request: Request, *, draw: bool = True):
    """(denoiser, cond for request.num images): the run's denoiser, wrapped in classifier-free guidance when
    the request asks for it (the unconditional side from the conditions' `unconditional`). draw=False gives
    conditions that draw per image (a layout) their deterministic choice (the planner's mean boxes) instead."""
    check_request(run, request)
    cond, uncond = run.conditions.request(request, request.num, request.seed if draw else None)
    student = getattr(run.config, "distill", None)
    if student is not None and student.guidance_input:  # an LCM student: w is its input, one call per step
        from noisecraft.models.guidance_input import guidance_cond

        return run.denoiser, guidance_cond(cond, request)
    if not request.guided:
        return run.denoiser, cond
    from noisecraft.guidance import ClassifierFreeGuidance

    scale = 1.0 if request.guidance is None else request.guidance
    return ClassifierFreeGuidance(run.denoiser, scale, uncond=uncond, interval=request.guidance_interval,
                                  rescale=request.guidance_rescale), cond


def generate(run, request: Request, *, callback=None, draw: bool = True) -> Generation:
    """The images of `request` on `run` (module docstring). callback(info) sees every sampler step (info["x"],
    info["denoised"], info["sigma"]; samples, not decoded images, for a latent run). draw: see `conditioned`."""
    denoiser, cond = conditioned(run, request, draw=draw)
    p = plan(run, request)
    project = run.conditions.project if run.conditions.projects else None  # e.g. zero centre of mass (molecules)
    samples = sample_batches(denoiser, p.sigmas, run.data_shape, num=request.num, seed=request.seed,
                             sampler=p.sampler, batch_size=request.batch_size, cond=cond, callback=callback,
                             device=run.device, project=project, **p.options)
    parameters = {"sampler": p.sampler, "steps": len(p.sigmas) - 1, "step_schedule": p.step_schedule,
                  "options": p.options, "conditioning": request.describe(), "model": run.config.name,
                  "model_step": run.step, "ema": run.ema, "seed": request.seed, "num": request.num}
    seeds = [request.seed + i for i in range(request.num)]
    return Generation(run.to_images(samples), seeds, parameters, samples)


def batch_cond(cond: dict | None, start: int, n: int, num: int) -> dict | None:
    """The condition of images start .. start + n - 1 of `num`: per-image entries (first dimension num) are
    sliced, batch-1 entries broadcast (one prompt or class for every image)."""
    if cond is None:
        return None
    out = {}
    for key, v in cond.items():
        if v.shape[0] not in (1, num):
            raise NoisecraftError(f"cond[{key!r}] has batch size {v.shape[0]}; give 1 or one per image ({num})")
        out[key] = v[start:start + n] if v.shape[0] == num else v.expand(n, *v.shape[1:])
    return out


def projected(denoiser, project):
    """The denoiser confined to a subspace with the orthogonal projection P = project(x, cond):
    D'(x, sigma, cond) = P(D(P(x), sigma, cond)). Every sampler updates x by linear combinations of x, estimates
    and fresh noise, so P(x) follows exactly the sampler's path in the subspace with projected noise (for the
    zero-CoM subspace, the sampling of Hoogeboom et al. 2022, Algorithm 2); `sample_batches` projects the initial
    draw and the result too."""

    def denoise(x, sigma, cond=None):
        return project(denoiser(project(x, cond), sigma, cond), cond)

    return denoise


def sample_batches(denoiser, sigmas: torch.Tensor, data_shape, *, num: int, seed: int, sampler: str = "heun",
                   batch_size: int = 64, cond=None, callback=None, device="cpu", project=None,
                   **sampler_options) -> torch.Tensor:
    """`num` samples of any denoiser, drawn in batches; sample i uses its own generator seeded seed + i, so it is
    the same whatever the batch size. project(x, cond): the subspace samples live in (`projected`; None: none).
    Returns float32 (num, *data_shape) on the CPU."""
    from noisecraft import samplers

    if isinstance(num, bool) or not isinstance(num, int) or not 1 <= num <= MAX_NUM:
        raise NoisecraftError(f"num must be an integer in [1, {MAX_NUM}], got {num!r}")
    fn = samplers.get(sampler)
    out = []
    for start in range(0, num, batch_size):
        n = min(batch_size, num - start)
        gens = make_generators(seed + start, n)
        x = randn_like(torch.empty(n, *data_shape, device=device), gens) * float(sigmas[0])
        cb = batch_cond(cond, start, n, num)
        try:
            if project is None:
                out.append(fn(denoiser, x, sigmas, cond=cb, generator=gens, callback=callback,
                              **sampler_options).cpu())
            else:
                x = fn(projected(denoiser, project), project(x, cb), sigmas, cond=cb, generator=gens,
                       callback=callback, **sampler_options)
                out.append(project(x, cb).cpu())
        except torch.OutOfMemoryError:
            x = out = None  # let go of the batch, then report outside the except block (its frames hold tensors)
            break
    if out is None:
        _free_device_memory(device)
        raise NoisecraftError(f"out of memory sampling a batch of {n} on {device}; use a smaller batch size "
                              f"(batch_size={max(1, n // 2)}, or --batch-size {max(1, n // 2)} on the command line)")
    return torch.cat(out).float()


def _free_device_memory(device) -> None:
    import gc

    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
