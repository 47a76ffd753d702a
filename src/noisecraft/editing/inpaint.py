"""Training-free inpainting and outpainting of any model, with every sampler.

Notation (VE view, Karras et al. 2022): x = x0 + sigma n; D(x, sigma, cond) the x0 estimate; y the known
image; m the mask, 1 (white) = regenerate and 0 (black) = keep, as in A1111 and diffusers; sigmas
sigma_0 > ... > sigma_N = 0 the sampling schedule (N steps). Every method returns m x + (1 - m) y: the known
region is kept exactly (bit for bit).

Replacement (Song et al. 2021, "Score-based generative modeling through SDEs", App. I.2, eq. 49; RePaint's
eq. 8 without resampling). At every noise level the known region of x is replaced by y noised to that level,
x_known = y + sigma z with fresh z, while the unknown region takes the unconditional reverse step. We write
it as a denoiser wrapper, so that every sampler (one or several evaluations per step, multistep, adaptive)
runs it unchanged:

    D'(x, sigma) = (1 - m) y + m D(m x + (1 - m) (y + sigma z), sigma),       z ~ N(0, I) fresh per call

plus a final paste. Why it is the replacement method for every sampler: all our samplers update x
elementwise as a linear combination of x, the x0 estimates and fresh noise, so the unknown region's update
sees D exactly as the replacement method gives it (the network sees the known region freshly noised), and
the known region of the state evolves with D' = y, i.e. along the exact flow of a point mass at y:

- ODE samplers (euler, heun, dpm-solver(++), unipc, lms, deis, expint, ode): every solver is exact when D is
  constant, so the state's known region is x = y + sigma (x_0 - y) / sigma_0, y noised with fixed noise,
  and ends at y (the paste only removes rounding).
- Ancestral / SDE samplers (ddpm, ddim eta > 0, euler_a, *_sde, euler_maruyama): x_next = D' + sigma_down
  (x - D') / sigma + sigma_up z makes the known region an exact draw of y + sigma_next n at every step (the
  DDPM posterior q(x_next | x, x0 = y), Ho et al. 2020 eq. 7), i.e. the replacement of RePaint eq. 8 with
  noise correlated along the path instead of redrawn; what the network sees is redrawn (noise="fresh").
- noise="state" instead feeds the network the state's own known region (the path above): for ancestral
  samplers the same marginals as "fresh"; for ODE samplers a deterministic inpainting.
- Samplers whose step sizes depend on norms of the whole sample (pc's Langevin step, the adaptive ode's
  error estimate) see the known region too; the method stays the replacement method, with their step sizes
  computed over the whole sample.

Exact for what? The replacement method itself is NOT an exact sampler of p(x_unknown | x_known = y): the
unknown region follows the unconditional score given a noisy known region, ignoring grad log p(y | x_t)
(Lugmayr et al. 2022, sec. 4.1; Chung et al. 2022); it is biased where the known region constrains the
unknown one strongly (tests/editing/test_inpaint.py measures the bias against the exact conditional law of a
Gaussian mixture).

RePaint (Lugmayr et al. 2022, Algorithm 1 and sec. 4.2): the same replacement, plus resampling. After a step
reaching level k (k steps left) for k = 0, j, 2j, ... with k + j <= N, go back up j levels by adding noise,
x <- x + sqrt(sigma_{k+j}^2 - sigma_k^2) z (Alg. 1 line 9 in the VE view, one level at a time as in the
authors' `get_schedule_jump`), and redo the j steps; r - 1 times (r resamplings). The jumps harmonise the
unknown region with the known one; more resampling brings it closer to the exact conditional law. Each step
is the stateless step of a sampler (`samplers.get_step`; default ddpm, the DDPM step of RePaint): a
multistep sampler's history is dropped after each jump back up, as it no longer describes the path.

Latent runs: the model works on latents z = E(image); the known latent is y_z = E(y) and the latent mask is
the pixel mask max-pooled by the autoencoder's factor f (a latent cell is regenerated if any of its pixels
is). The sample is decoded and blended in pixel space, m x + (1 - m) y, so the known pixels are exact.

Trained inpainting (method "trained"): a run conditioned on the mask and the masked image
(`noisecraft.conditions.inpaint`, preset `mnist-inpaint`) samples p(x | (1 - m) y, m) with any sampler and
guidance through the plain generation pipeline; the known region is pasted at the end. A loaded Stable Diffusion
inpainting model is one too (`noisecraft.interop.diffusers_inpaint`: its condition takes the pixels). Method "auto" (the
default) is "trained" for such a run and "replace" otherwise.

Outpainting is inpainting on an enlarged canvas: `outpaint(run, image, pad=(l, t, r, b))` puts the image in a
canvas with the pad regenerated - the model's canvas for an image smaller by the pad, or, for an image of the
model's size, a canvas larger than the model's (a U-Net samples at any size its down-sampling divides).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import replace

import torch

from noisecraft.core.random import make_generators, randn_like
from noisecraft.errors import NoisecraftError, unknown_name

METHODS = ("auto", "replace", "repaint", "trained")
NOISES = ("fresh", "state")


def paste(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """m x + (1 - m) y for a binary mask, as a selection: the known region is y bit for bit."""
    return torch.where(mask.to(torch.bool), x, y.to(x.dtype))


def _sigma_like(sigma, x: torch.Tensor) -> torch.Tensor:
    """sigma (float, 0-d or (B,)) broadcastable against x, in x's dtype."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return s.reshape(-1, *[1] * (x.ndim - 1)) if s.ndim else s


class ReplacementDenoiser:
    """D'(x, sigma, cond) = (1 - m) y + m D(m x + (1 - m) (y + sigma z), sigma, cond) (module docstring).

    denoiser:  the model's denoiser (guided or not)
    y:         the known image (or latent), broadcastable to x
    mask:      1 = regenerate, 0 = keep, broadcastable to x
    generator: where z comes from (one generator, or one per sample)
    noise:     "fresh" (z redrawn at every call: the replacement method) or "state" (the sampler's own known
               region is passed through)
    """

    def __init__(self, denoiser, y, mask, *, generator=None, noise: str = "fresh"):
        if noise not in NOISES:
            raise unknown_name("replacement noise", noise, NOISES)
        self.denoiser, self.y, self.mask, self.generator, self.noise = denoiser, y, mask, generator, noise

    def __call__(self, x: torch.Tensor, sigma, cond=None) -> torch.Tensor:
        y, m = self.y.to(x), self.mask.to(x.device)
        if self.noise == "fresh":
            x = paste(x, y + _sigma_like(sigma, x) * randn_like(x, self.generator), m)
        return paste(self.denoiser(x, sigma, cond).to(x.dtype), y, m)


def sample_replace(denoiser, x, sigmas, y, mask, *, sampler: str = "heun", cond=None, generator=None,
                   callback=None, noise: str = "fresh", **options):
    """Inpainting by replacement with any sampler (module docstring). x: sigmas[0] times unit noise, as for
    every sampler (the known region gets y added); y, mask broadcastable to x. Returns m x + (1 - m) y."""
    from noisecraft import samplers

    fn = samplers.get(sampler)
    mask = mask.to(x.device)
    x = x + (1 - mask.to(x.dtype)) * y.to(x)  # x_0 = y + sigma_0 n in the known region
    wrapped = ReplacementDenoiser(denoiser, y, mask, generator=generator, noise=noise)
    out = fn(wrapped, x, sigmas, cond=cond, generator=generator, callback=callback, **options)
    return paste(out, y.to(out), mask)


def repaint_schedule(steps: int, jump: int, resample: int) -> list[int]:
    """The indices into sigmas (0 = sigma_0, steps = sigma_N = 0) RePaint visits, from 0 to `steps`: down one
    level at a time; after reaching level k = steps - i for k = 0, jump, 2 jump, ... (k + jump <= steps) go
    back up `jump` levels, resample - 1 times (Lugmayr et al. 2022, Alg. 1; the authors' get_schedule_jump)."""
    for what, v in (("RePaint jump length", jump), ("RePaint resamplings", resample), ("steps", steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise NoisecraftError(f"{what} must be an integer >= 1, got {v!r}")
    left = {k: resample - 1 for k in range(0, steps - jump + 1, jump)}
    i, path = 0, [0]
    while i < steps:
        i += 1
        path.append(i)
        if left.get(steps - i, 0) > 0:
            left[steps - i] -= 1
            for _ in range(jump):
                i -= 1
                path.append(i)
    return path


@torch.no_grad()
def sample_repaint(denoiser, x, sigmas, y, mask, *, sampler: str = "ddpm", jump: int = 10, resample: int = 10,
                   cond=None, generator=None, callback=None, **options):
    """RePaint (Lugmayr et al. 2022, Alg. 1) with the stateless step of `sampler` (module docstring). x:
    sigmas[0] times unit noise; y, mask broadcastable to x. Returns m x + (1 - m) y."""
    from noisecraft import samplers
    from noisecraft.samplers._common import check_sigmas, notify, working

    step = samplers.get_step(sampler)
    if "generator" in inspect.signature(step).parameters:
        options = {**options, "generator": generator}
    sigmas = check_sigmas(sigmas, x)
    s = sigmas.tolist()
    x_in, x = x, working(x)
    mask, y = mask.to(x.device), y.to(x)
    x = x + (1 - mask.to(x.dtype)) * y  # x_0 = y + sigma_0 n in the known region
    path, state, count = repaint_schedule(len(s) - 1, jump, resample), None, 0
    for i, i_next in zip(path, path[1:], strict=False):
        if i_next < i:  # back up one level: x_{t} ~ N(x_{t-1}, (sigma_t^2 - sigma_{t-1}^2) I)   (Alg. 1 line 9)
            x, state = x + math.sqrt(s[i_next] ** 2 - s[i] ** 2) * randn_like(x, generator), None
            continue
        denoised = denoiser(x, sigmas[i], cond).to(x.dtype)
        notify(callback, count, x, s[i], s[i_next], denoised)
        x_unknown, state = step(x, s[i], s[i_next], denoised, state, **options)  # Alg. 1 lines 6-7
        x_known = y + s[i_next] * randn_like(x, generator) if s[i_next] > 0 else y  # Alg. 1 line 5
        x, count = paste(x_unknown, x_known, mask), count + 1  # Alg. 1 line 8
    return paste(x, y, mask).to(x_in.dtype)


# ------------------------------------------------------------------------------------------ runs
def image_shape(run) -> tuple[int, int, int]:
    """(C, H, W) of the run's images: its sample shape, or for a latent run the decoded one."""
    if len(run.data_shape) != 3:
        raise NoisecraftError(f"inpainting needs a model of 2-D images; model {run.config.name!r} makes samples "
                              f"of shape {tuple(run.data_shape)}")
    ae = run.autoencoder
    if ae is None:
        return tuple(run.data_shape)
    return (ae.config.in_channels, run.data_shape[1] * ae.factor, run.data_shape[2] * ae.factor)


def _shape_text(shape) -> str:
    return "x".join(map(str, shape)) + " (channels x height x width)"


def check_image(run, image: torch.Tensor, what: str = "image") -> torch.Tensor:
    """A (C, H, W) or (1, C, H, W) image in [-1, 1] of the run's image shape, as (1, C, H, W) float32."""
    expected = image_shape(run)
    image = torch.as_tensor(image).float()
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if tuple(image.shape) != expected:
        raise NoisecraftError(f"{what} is {_shape_text(image.shape)}; model {run.config.name!r} takes images of "
                              f"{_shape_text(expected)}")
    if not torch.isfinite(image).all():
        raise NoisecraftError(f"{what} has non-finite values")
    return image[None]


def check_mask(mask: torch.Tensor, size: tuple[int, int], what: str = "mask") -> torch.Tensor:
    """A binary (H, W), (1, H, W) or (1, 1, H, W) mask of the image's size (1 = regenerate, 0 = keep), as
    (1, 1, H, W) float32."""
    mask = torch.as_tensor(mask).float()
    while mask.ndim > 2 and mask.shape[0] == 1:
        mask = mask[0]
    if tuple(mask.shape) != tuple(size):
        raise NoisecraftError(f"{what} is {'x'.join(map(str, mask.shape))}; the image is {size[0]}x{size[1]} "
                              f"(height x width): give a one-channel mask of the image's size")
    bad = ~((mask == 0) | (mask == 1))
    if bad.any():
        raise NoisecraftError(f"{what} must be binary: 1 (white) = regenerate, 0 (black) = keep; {int(bad.sum())} "
                              f"values are neither (e.g. {float(mask[bad][0]):g})")
    return mask[None, None]


def inpaint(run, image, mask, request=None, *, method: str = "auto", jump: int = 10, resample: int = 10,
            noise: str = "fresh", callback=None):
    """Inpaint `image` ((C, H, W) in [-1, 1], the run's image size) where `mask` is 1, `request.num` times, with
    the request's conditions, guidance, sampler, steps and seed (image i from seed + i). method: "trained" (a
    mask-conditioned run), "replace" (any run and sampler; noise "fresh" or "state"), "repaint" (a sampler with a
    step form, default ddpm; `jump`, `resample`), or "auto" (trained when the run is mask-conditioned, else
    replace). Returns a pipelines.Generation whose images keep the unmasked pixels exactly."""
    from noisecraft.pipelines import Generation, Request, conditioned, generate, plan

    if method not in METHODS:
        raise unknown_name("inpainting method", method, METHODS)
    trained = run.conditions.get("inpaint") is not None
    if method == "auto":
        method = "trained" if trained else "replace"
    if method == "trained" and not trained:
        raise NoisecraftError(f"inpainting method 'trained' needs a mask-conditioned run (conditioning.conditions="
                              f"['inpaint'], e.g. preset mnist-inpaint); model {run.config.name!r} is not one: use "
                              f"method replace or repaint")
    request = request or Request()
    y = check_image(run, image)  # (1, C, H, W)
    m = check_mask(mask, y.shape[-2:])  # (1, 1, H, W)
    if method == "trained":  # a condition made in pixel space (SD inpainting) takes the pixels as they are
        y_model, m_model = (y, m) if run.conditions.get("inpaint").pixel_space else _model_space(run, y, m)
        given = {**(request.conditions or {}), "inpaint": {"image": y_model, "mask": m_model}}
        result = generate(run, replace(request, conditions=given), callback=callback)
        parameters = {**result.parameters, "inpaint": {"method": "trained", "regenerated": float(m.mean())}}
        return Generation(paste(result.images.float(), y, m), result.seeds, parameters, result.samples)
    if trained:  # replace / repaint on a mask-conditioned run: its unconditional model, everything masked
        y_model, m_model = (y, m) if run.conditions.get("inpaint").pixel_space else _model_space(run, y, m)
        everything = {"image": torch.zeros_like(y_model), "mask": torch.ones_like(m_model)}
        request = replace(request, conditions={**(request.conditions or {}), "inpaint": everything})
    if method == "repaint" and request.sampler is None:
        request = replace(request, sampler="ddpm")
    denoiser, cond = conditioned(run, request)
    p = plan(run, request)
    if method == "repaint":
        from noisecraft import samplers

        samplers.get_step(p.sampler)  # a sampler without a step form: the one-line error naming those with one
        repaint_schedule(len(p.sigmas) - 1, jump, resample)
    y_model, m_model = _model_space(run, y, m)
    options = dict(p.options, sampler=p.sampler, **({"noise": noise} if method == "replace" else
                                                     {"jump": jump, "resample": resample}))
    samples = _sample(denoiser, p.sigmas, y_model, m_model, request, cond, callback, run.device,
                      sample_replace if method == "replace" else sample_repaint, options)
    images = paste(run.to_images(samples).float(), y, m) if run.autoencoder is not None else samples
    parameters = {"sampler": p.sampler, "steps": len(p.sigmas) - 1, "step_schedule": p.step_schedule,
                  "options": p.options, "conditioning": request.describe(), "model": run.config.name,
                  "model_step": run.step, "ema": run.ema, "seed": request.seed, "num": request.num,
                  "inpaint": {"method": method, "regenerated": float(m.mean()),
                              **({"noise": noise} if method == "replace" else {"jump": jump, "resample": resample})}}
    return Generation(images, [request.seed + i for i in range(request.num)], parameters, samples)


def _model_space(run, y: torch.Tensor, m: torch.Tensor):
    """(known image, mask) where the model works: pixels, or for a latent run E(y) and the max-pooled mask."""
    ae = run.autoencoder
    if ae is None:
        return y.to(run.device), m.to(run.device)
    from noisecraft.autoencoder.latents import encode_images

    z = encode_images(ae, y, progress=False)  # (1, c, H/f, W/f)
    m_z = torch.nn.functional.max_pool2d(m, ae.factor)  # a latent cell is regenerated if any of its pixels is
    return z.to(run.device), m_z.to(run.device)


def _sample(denoiser, sigmas, y, m, request, cond, callback, device, method, options) -> torch.Tensor:
    """request.num samples in batches, sample i from its own generator seeded seed + i (as sample_batches)."""
    from noisecraft.pipelines import batch_cond

    out, num = [], request.num
    for start in range(0, num, request.batch_size):
        n = min(request.batch_size, num - start)
        gens = make_generators(request.seed + start, n)
        x = randn_like(torch.empty(n, *y.shape[1:], device=device), gens) * float(sigmas[0])
        out.append(method(denoiser, x, sigmas, y, m, cond=batch_cond(cond, start, n, num), generator=gens,
                          callback=callback, **options).cpu())
    return torch.cat(out).float()


def outpaint_canvas(run, image, pad) -> tuple[torch.Tensor, torch.Tensor]:
    """(canvas, mask): `image` put in a canvas, `pad` = (left, top, right, bottom) pixels around it regenerated
    (mask 1), the image kept (mask 0). An image smaller than the run's image size by the pad fills a canvas of
    the run's size; an image of the run's size gets a canvas enlarged by the pad (see `enlarged_run`)."""
    C, H, W = image_shape(run)
    if len(pad) != 4 or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in pad) or not any(pad):
        raise NoisecraftError(f"outpainting pad must be 4 integers >= 0 (left, top, right, bottom), not all 0; "
                              f"got {tuple(pad)!r}")
    left, top, right, bottom = pad
    inner = (C, H - top - bottom, W - left - right)
    image = torch.as_tensor(image).float()
    image = image[0] if image.ndim == 4 and image.shape[0] == 1 else image
    if tuple(image.shape) == (C, H, W):  # beyond the model's canvas
        H, W = H + top + bottom, W + left + right
    elif min(inner) < 1 or tuple(image.shape) != inner:
        raise NoisecraftError(f"image is {_shape_text(image.shape)}; outpainting by (left, top, right, bottom) = "
                              f"{tuple(pad)} takes an image of model {run.config.name!r}'s size "
                              f"{_shape_text((C, H, W))} (the canvas grows by the pad) or one of "
                              f"{_shape_text(inner)} (the canvas is the model's size)")
    canvas, mask = torch.zeros(C, H, W), torch.ones(H, W)
    canvas[:, top:H - bottom, left:W - right] = image
    mask[top:H - bottom, left:W - right] = 0
    return canvas, mask


def enlarged_run(run, height: int, width: int):
    """The run sampling images of height x width pixels: a convolutional U-Net runs at any size its down-sampling
    divides (Rombach et al. 2022 sample SD beyond its training size the same way); other networks (a DiT's fixed
    position table, an MLP) only at their own."""
    from dataclasses import replace as with_fields

    C, H, W = image_shape(run)
    if (height, width) == (H, W):
        return run
    model = getattr(run.config, "model", None)
    net = getattr(run.config, "network", None)
    if model != "unet" or net is None:
        raise NoisecraftError(f"outpainting beyond the model's {H}x{W} needs a U-Net run; model {run.config.name!r} "
                              f"is a {model or 'foreign'} network: give an image smaller than {H}x{W} by the pad")
    f = run.autoencoder.factor if run.autoencoder is not None else 1
    unit = f * 2 ** (len(net.channel_mult) - 1)
    if height % unit or width % unit:
        raise NoisecraftError(f"an outpainted canvas of {height}x{width} does not fit model {run.config.name!r}: "
                              f"height and width must be multiples of {unit} (its down-sampling"
                              f"{' times the autoencoder factor' if f > 1 else ''}); change the pad")
    return with_fields(run, data_shape=(run.data_shape[0], height // f, width // f))


def outpaint(run, image, pad, request=None, **options):
    """Outpainting: inpainting (`inpaint`, same options) of `image` on a canvas with `pad` = (left, top, right,
    bottom) pixels around it regenerated: the run's canvas (an image smaller by the pad), or for an image of the
    run's size a canvas enlarged by the pad (U-Net runs, `enlarged_run`)."""
    canvas, mask = outpaint_canvas(run, image, tuple(pad))
    return inpaint(enlarged_run(run, *canvas.shape[-2:]), canvas, mask, request, **options)
