"""Image-to-image: SDEdit, exact probability-flow ODE inversion, and editing / style transfer built on them.

Notation (VE view, Karras et al. 2022): x = x0 + sigma n; D(x, sigma, cond) the x0 estimate; a sampling
schedule sigma_0 > sigma_1 > ... > sigma_{N-1} > sigma_N = 0 (N steps).

- SDEdit (Meng et al. 2022, Sec. 3, "SDEdit: guided image synthesis and editing with stochastic differential
  equations"): perturb the guide image to x(t0) = x0 + sigma(t0) n (their Eq. in Sec. 3.1 for the VE SDE) and
  solve the reverse process from t0 to 0. Strength s in [0, 1] picks t0 as diffusers' img2img does: the last
  k = round(s N) steps of the run's schedule are run, starting at sigma_{N-k} (diffusers truncates, int(s N)).
  k = 0 returns the image unchanged; k = N starts at sigma_0 from the prior draw sigma_0 n alone, which is
  plain sampling from the same noise (the image is negligible next to sigma_max, and dropping it makes
  strength 1 the text-to-image path exactly).
- ODE inversion (Song et al. 2021a, DDIM Sec. 4.3 "DDIM inversion"; the probability-flow ODE of Song et al.
  2021b, Eq. 13, in the form dx/dsigma = (x - D(x, sigma)) / sigma of Karras et al. 2022, Eq. 3): the
  deterministic sampler's steps run on the reversed schedule sigma_{N-1} < ... < sigma_0, giving the x(sigma_0)
  whose sampling trajectory ends at the image. The sampler's last step (sigma_{N-1} -> 0) returns
  D(x_{N-1}, sigma_{N-1}); it is inverted exactly by the fixed point x <- x + (x0 - D(x, sigma_{N-1})) (D is
  nearly the identity at small sigma, so this contracts; Pan et al. 2023, AIDI, use the same fixed point for
  whole steps). Then "editing by inversion": sample from that x(sigma_0) under another condition.
- Style transfer: image-to-image toward a target condition (class or prompt), by SDEdit or by inversion.

Latent runs (Rombach et al. 2022): the image is encoded with the run's autoencoder (posterior mean, scaled:
`noisecraft.autoencoder.latents.encode_images`), edited in latent space and decoded (`Run.to_images`).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from noisecraft.core.random import make_generators, randn_like
from noisecraft.errors import NoisecraftError
from noisecraft.samplers._common import notify

INVERTIBLE = ("ddim", "dpmpp_2m", "euler", "heun")  # deterministic samplers with an inversion below
FINAL_ITERATIONS = 20  # fixed-point iterations that invert the last step D(x, sigma_{N-1}) = x0


# ------------------------------------------------------------------------------------------ SDEdit
def check_strength(strength) -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise NoisecraftError(f"strength must be a number in [0, 1] (0 = the input, 1 = plain sampling); "
                              f"got {strength!r}")
    return float(strength)


def sdedit_start(steps: int, strength: float) -> int:
    """Index i0 of the schedule where SDEdit starts: the last k = round(strength * steps) steps are run."""
    return steps - min(steps, round(check_strength(strength) * steps))


@torch.no_grad()
def sdedit(denoiser, x0: torch.Tensor, sigmas: torch.Tensor, strength: float, *, sampler: str = "heun", cond=None,
           generator=None, callback=None, **options) -> torch.Tensor:
    """SDEdit (Meng et al. 2022, Sec. 3) of x0 (B, ...): x = x0 + sigma_{i0} n with n from `generator` (one per
    image for batch-size independence), then `sampler` over sigmas[i0:] (module docstring for i0 and the ends)."""
    from noisecraft import samplers

    i0 = sdedit_start(len(sigmas) - 1, strength)
    if i0 == len(sigmas) - 1:
        return x0.clone()
    n = randn_like(x0, generator)  # (B, ...)
    x = n * float(sigmas[0]) if i0 == 0 else x0 + float(sigmas[i0]) * n
    return samplers.get(sampler)(denoiser, x, sigmas[i0:], cond=cond, generator=generator, callback=callback,
                                 **options)


# ------------------------------------------------------------------------------------------ inversion
def invert_final(denoiser, x0: torch.Tensor, sigma: float, cond=None, iterations: int = FINAL_ITERATIONS):
    """The x with D(x, sigma) = x0 (the inverse of a sampler's last step to 0), by the fixed point
    x <- x + (x0 - D(x, sigma)), started at x0; D's Jacobian is I + O(sigma^2 / sigma_data^2) at small sigma."""
    x = x0.clone()
    s = torch.tensor(sigma, dtype=torch.float64)
    for _ in range(iterations):
        x = x + (x0 - denoiser(x, s, cond).to(x.dtype))
    return x


def _denoise(denoiser, x, sigma: float, cond):
    return denoiser(x, torch.tensor(sigma, dtype=torch.float64), cond).to(x.dtype)


def _euler(denoiser, x, sigma: float, sigma_next: float, cond):
    """One Euler step of dx/dsigma = (x - D) / sigma (Karras et al. 2022, Eq. 3 / Alg. 1, line 5), either way;
    DDIM (eta = 0) is this step in sigma, so reversed it is DDIM inversion (Song et al. 2021a, Sec. 4.3)."""
    denoised = _denoise(denoiser, x, sigma, cond)
    return x + (sigma_next - sigma) * (x - denoised) / sigma, denoised


def _heun(denoiser, x, sigma: float, sigma_next: float, cond):
    """One Heun step (Karras et al. 2022, Alg. 1, lines 5-11), either way."""
    x_euler, denoised = _euler(denoiser, x, sigma, sigma_next, cond)
    d_next = (x_euler - _denoise(denoiser, x_euler, sigma_next, cond)) / sigma_next
    return x + (sigma_next - sigma) * 0.5 * ((x - denoised) / sigma + d_next), denoised


_ONE_STEP = {"ddim": _euler, "euler": _euler, "heun": _heun}


def _invert_one_step(step, denoiser, x, up, cond, callback, refine: int):
    """The one-step method run up the reversed schedule; refine > 0 then solves step(x_i; sigma_i -> sigma_{i+1})
    = x_{i+1} for x_i by the fixed point x_i <- x_i + (x_{i+1} - step(x_i)) (it contracts by about
    (1 - sigma_{i+1} / sigma_i) |I - dD/dx| per iteration), making each step the sampler's exact inverse (the
    fixed-point inversion of Pan et al. 2023, AIDI, for Euler / Heun)."""
    for i in range(len(up) - 1):
        x_low = x
        x, denoised = step(denoiser, x_low, up[i], up[i + 1], cond)
        notify(callback, i, x_low, up[i], up[i + 1], denoised)
        for _ in range(refine):
            x = x + (x_low - step(denoiser, x, up[i + 1], up[i], cond)[0])
    return x


def _invert_dpmpp_2m(denoiser, x, up, cond, callback, refine: int):
    """DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2) on the reversed schedule: its step
    x_t = (sigma_t / sigma_s) x_s - (e^{-h} - 1) D_s + ... holds for h = lambda_t - lambda_s < 0 too. (Its
    forward step reads D at the level above, unknown when going up, so it takes no per-step refinement.)"""
    from noisecraft.samplers import get_step

    if refine:
        raise NoisecraftError(f"refined inversion takes a one-step sampler ({', '.join(_ONE_STEP)}), not dpmpp_2m")
    step, state = get_step("dpmpp_2m"), None
    for i in range(len(up) - 1):
        denoised = _denoise(denoiser, x, up[i], cond)
        notify(callback, i, x, up[i], up[i + 1], denoised)
        x, state = step(x, up[i], up[i + 1], denoised, state)
    return x


DEFAULT_REFINE = 1  # fixed-point iterations per step by default (one-step samplers), for twice the network calls:
                    # round-trip errors with and without it in benchmarks/editing.md


def default_refine(name: str, refine: int | None) -> int:
    """The refinement of sampler `name`: refine as given (an integer >= 0), or for None DEFAULT_REFINE for the
    one-step samplers and 0 for dpmpp_2m (which takes none)."""
    if refine is None:
        return DEFAULT_REFINE if name in _ONE_STEP else 0
    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise NoisecraftError(f"refine must be an integer >= 0 (fixed-point iterations per inversion step), got "
                              f"{refine!r}")
    return refine


def _inverter(name: str):
    from functools import partial

    return _invert_dpmpp_2m if name == "dpmpp_2m" else partial(_invert_one_step, _ONE_STEP[name])


@torch.no_grad()
def invert(denoiser, x0: torch.Tensor, sigmas: torch.Tensor, *, sampler: str = "heun", cond=None, callback=None,
           refine: int | None = None, final_iterations: int = FINAL_ITERATIONS) -> torch.Tensor:
    """Exact probability-flow ODE inversion of x0 (B, ...) for a decreasing schedule `sigmas` ending at 0: the
    x(sigma_0) from which `sampler` (deterministic: one of INVERTIBLE, default options) over `sigmas` returns
    x0 up to the discretisation error of both passes; refine = k fixed-point iterations per step (one-step
    samplers) make it the sampler's exact inverse (None: `default_refine`, one iteration for euler / ddim / heun).
    The noise is the result / sigma_0 (module docstring)."""
    from noisecraft.samplers import resolve
    from noisecraft.samplers._common import check_sigmas, working

    name = resolve(sampler)
    if name not in INVERTIBLE:
        raise NoisecraftError(f"sampler {name!r} cannot be inverted; inversion takes a deterministic sampler: "
                              f"{', '.join(INVERTIBLE)}")
    sigmas = check_sigmas(sigmas, x0)
    up = sigmas[:-1].flip(0).tolist()  # sigma_{N-1} < ... < sigma_0
    x = invert_final(denoiser, working(x0), up[0], cond, final_iterations)
    return _inverter(name)(denoiser, x, up, cond, callback, default_refine(name, refine)).to(x0.dtype)


# ------------------------------------------------------------------------------------------ runs
def image_shape(run) -> tuple[int, ...]:
    """The (C, H, W) of the images a run takes: its sample shape, or the decoded size of a latent run's."""
    if run.autoencoder is None:
        return tuple(run.data_shape)
    c, h, w = run.data_shape
    return (run.autoencoder.config.in_channels, h * run.autoencoder.factor, w * run.autoencoder.factor)


def check_image(run, image: torch.Tensor, num: int) -> torch.Tensor:
    """image (C, H, W) or (1 or num, C, H, W) in [-1, 1] -> (num, C, H, W) float32; NoisecraftError naming the
    expected shape otherwise."""
    want = image_shape(run)
    image = torch.as_tensor(image)
    batch = image[None] if image.ndim == len(want) else image
    if batch.ndim != len(want) + 1 or tuple(batch.shape[1:]) != want or batch.shape[0] not in (1, num):
        size = "x".join(map(str, want[1:]))
        raise NoisecraftError(f"image has shape {tuple(image.shape)}; model {run.config.name!r} takes {want[0]}-"
                              f"channel {size} images ((C, H, W) = {want}, one image or one per output)")
    if not torch.isfinite(batch).all():
        raise NoisecraftError("image has non-finite values (NaN or inf)")
    return batch.float().expand(num, *want)


def encode(run, images: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W) in [-1, 1] -> the run's samples: a latent run's scaled latents, else the images."""
    if run.autoencoder is None:
        return images.to(run.device)
    from noisecraft.autoencoder.latents import encode_images

    return encode_images(run.autoencoder, images, progress=False).to(run.device)


def _batched(fn, x0: torch.Tensor, num: int, batch_size: int, seed: int, cond):
    """fn(x0 batch, generators, cond batch) over batches; image i's generator is seeded seed + i (as
    `pipelines.sample_batches`), so an image does not depend on the batch size. Float32 on the CPU."""
    from noisecraft.pipelines import batch_cond

    out = []
    for start in range(0, num, batch_size):
        n = min(batch_size, num - start)
        out.append(fn(x0[start:start + n], make_generators(seed + start, n), batch_cond(cond, start, n, num)).cpu())
    return torch.cat(out).float()


def _generation(run, request, samples, extra: dict, images=None):
    from noisecraft.pipelines import Generation, plan

    p = plan(run, request)
    parameters = {"sampler": p.sampler, "steps": len(p.sigmas) - 1, "step_schedule": p.step_schedule,
                  "options": p.options, "conditioning": request.describe(), "model": run.config.name,
                  "model_step": run.step, "ema": run.ema, "seed": request.seed, "num": request.num, **extra}
    images = run.to_images(samples) if images is None else images
    return Generation(images, [request.seed + i for i in range(request.num)], parameters, samples)


def img2img(run, image: torch.Tensor, request, strength: float = 0.75, *, callback=None):
    """SDEdit on a loaded run (`sdedit`): the request's condition, guidance, sampler and steps; image (C, H, W)
    or (1 or num, C, H, W) in [-1, 1]. Returns a `pipelines.Generation`; strength 0 gives the image back."""
    from noisecraft.pipelines import conditioned, plan

    check_strength(strength)
    pixels = check_image(run, image, request.num)  # (num, C, H, W)
    x0 = encode(run, pixels)
    denoiser, cond = conditioned(run, request)
    p = plan(run, request)

    def one(x, gens, c):
        return sdedit(denoiser, x, p.sigmas, strength, sampler=p.sampler, cond=c, generator=gens, callback=callback,
                      **p.options)

    samples = _batched(one, x0, request.num, request.batch_size, request.seed, cond)
    unchanged = sdedit_start(len(p.sigmas) - 1, strength) == len(p.sigmas) - 1  # no step: the input itself
    return _generation(run, request, samples, {"strength": strength, "method": "sdedit"},
                       pixels.clone() if unchanged else None)


def invert_image(run, image: torch.Tensor, request, *, refine: int | None = None) -> torch.Tensor:
    """The x(sigma_0) of `image` under the request's condition and guidance (`invert`; the request's sampler must
    be deterministic, without options). Returns (num, *run.data_shape) float32 on the CPU."""
    from noisecraft.pipelines import conditioned, plan

    p = plan(run, request)
    if p.options:
        raise NoisecraftError(f"inversion runs {p.sampler!r} with its default options; got {sorted(p.options)}")
    x0 = encode(run, check_image(run, image, request.num))
    denoiser, cond = conditioned(run, request)
    return _batched(lambda x, gens, c: invert(denoiser, x, p.sigmas, sampler=p.sampler, cond=c, refine=refine),
                    x0, request.num, request.batch_size, request.seed, cond)


def edit_by_inversion(run, image: torch.Tensor, source, target, *, refine: int | None = None, callback=None):
    """Editing by inversion: invert `image` under the `source` request's condition, then sample the same
    deterministic sampler from that x(sigma_0) under `target`'s condition and guidance (Song et al. 2021a,
    Sec. 5.4 / Mokady et al. 2023 without null-text tuning). Steps and sampler come from `target`."""
    from noisecraft import samplers
    from noisecraft.pipelines import conditioned, plan

    source = replace(source, sampler=target.sampler, steps=target.steps, step_schedule=target.step_schedule,
                     options=target.options, num=target.num, batch_size=target.batch_size)
    x_T = invert_image(run, image, source, refine=refine).to(run.device)
    denoiser, cond = conditioned(run, target)
    p = plan(run, target)
    fn = samplers.get(p.sampler)
    samples = _batched(lambda x, gens, c: fn(denoiser, x, p.sigmas, cond=c, callback=callback), x_T, target.num,
                       target.batch_size, target.seed, cond)
    return _generation(run, target, samples, {"method": "inversion", "source": source.describe()})


def style_transfer(run, image: torch.Tensor, target, *, strength: float = 0.6, invert: bool = False,
                   source=None):
    """Image-to-image toward `target`'s condition (a class or prompt): SDEdit at `strength`, or with invert=True
    editing by inversion from `source` (default: the unconditional model, i.e. no condition)."""
    if invert:
        from noisecraft.pipelines import Request

        return edit_by_inversion(run, image, source or Request(), target)
    return img2img(run, image, target, strength)
