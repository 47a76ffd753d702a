"""Shared sampler helpers (DESIGN habit 6): input checks, the loop, the callback, option checks, the
ancestral split, the multistep history and the last step to sigma = 0.

Notation (VE view, Karras et al. 2022): x = x0 + sigma n; D = denoiser(x, sigma) the x0 estimate;
lambda = -log(sigma) the half log-SNR of Lu et al. 2022 (with alpha = 1 in the VE view); h = lambda_next -
lambda the step in lambda.

Callback contract: once per step, after the step's first denoiser evaluation, a sampler calls
`callback(info)` with the dict

    {"i": step index (0-based), "x": the noisy sample the denoiser saw, "sigma": its noise level
     (float), "sigma_next": the level the step goes to (float), "denoised": the x0 estimate}

Returning a value from the callback has no effect.

Stateless single-step form (for callers that drive the loop): every sampler that needs one denoiser
evaluation per step also exposes `step(x, sigma, sigma_next, denoised, state, **options) -> (x, state)`
(see `noisecraft.samplers.get_step`). `state` is None on the first step; afterwards it is a `History`
of the previous (sigma, model output) pairs, newest first, plus what the method needs (UniPC: the sample
before its last predictor). States are never modified in place.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import torch

from noisecraft.errors import NoisecraftError


def variant(fn, name: str, doc: str, **defaults):
    """A named sampler that is `fn` with other option defaults (a functools.partial with a docstring)."""
    p = partial(fn, **defaults)
    p.__name__, p.__doc__ = name, doc
    return p


def check_sigmas(sigmas, x: torch.Tensor) -> torch.Tensor:
    """Validate a sampling schedule: 1-D, finite, decreasing, ending in 0. Returns float64 on x's device."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise NoisecraftError(f"sigmas must be a 1-D tensor of at least 2 levels, got shape {tuple(sigmas.shape)}")
    if not torch.isfinite(sigmas).all():
        raise NoisecraftError("sigmas must be finite")
    if sigmas[-1] != 0 or (sigmas[:-1] <= 0).any():
        raise NoisecraftError("sigmas must be positive and end in exactly 0")
    if not (sigmas[1:] < sigmas[:-1]).all():
        raise NoisecraftError("sigmas must be strictly decreasing")
    if not torch.is_floating_point(x) or not torch.isfinite(x).all():
        raise NoisecraftError("x must be a finite floating-point tensor")
    return sigmas.to(x.device)


def working(x: torch.Tensor) -> torch.Tensor:
    """x in the sampler's working dtype: float64 stays float64, everything else becomes float32 (habit 8)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def notify(callback, i: int, x, sigma, sigma_next, denoised) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": float(sigma), "sigma_next": float(sigma_next), "denoised": denoised})


def check_choice(what: str, value, allowed) -> None:
    if value not in allowed:
        raise NoisecraftError(f"{what} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def check_range(what: str, value, lo: float, hi: float = math.inf) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise NoisecraftError(f"{what} must be a number in [{lo}, {hi}]; got {value!r}")


def run_multistep(step, denoiser, x, sigmas, cond, callback, **options):
    """The loop shared by all one-evaluation-per-step samplers: D = denoiser(x, sigma_i), then `step`."""
    sigmas = check_sigmas(sigmas, x)
    x_in, x = x, working(x)
    s = sigmas.tolist()
    state = None
    for i in range(len(s) - 1):
        denoised = denoiser(x, sigmas[i], cond).to(x.dtype)
        notify(callback, i, x, s[i], s[i + 1], denoised)
        x, state = step(x, s[i], s[i + 1], denoised, state, **options)
    return x.to(x_in.dtype)


def ancestral_split(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """(sigma_down, sigma_up) with sigma_down^2 + sigma_up^2 = sigma_next^2.

    sigma_up = eta * sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2) is the standard deviation of
    the DDPM posterior q(x_next | x, x0) in the VE view (Ho et al. 2020, Eq. 7) scaled by eta, which is
    DDIM's sigma_t(eta) (Song et al. 2021, Eq. 16) divided by sqrt(abar_next).
    """
    if sigma_next == 0:
        return 0.0, 0.0
    up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(sigma_next**2 - up**2), up


class History(NamedTuple):
    """Multistep state, newest first: the previous noise levels and the model outputs there, in the
    method's own parameterisation (x0 estimates D for DPM-Solver++ and UniPC; noise estimates
    (x - D) / sigma for LMS and DEIS). `extra` holds what else a method needs."""

    sigmas: tuple = ()
    outputs: tuple = ()
    extra: dict | None = None


def push(state: History | None, sigma: float, output, keep: int, **extra) -> History:
    """A new History with (sigma, output) in front, at most `keep` entries."""
    state = state or History()
    return History((sigma, *state.sigmas)[:keep], (output, *state.outputs)[:keep], extra or None)


FINAL_STEPS = ("denoise", "extrapolate")


def to_zero(denoised, state: History | None, sigma: float, order: int, final: str):
    """The last step, from sigma to 0, given the x0 estimate D at sigma and the previous ones in `state`.

    The exact answer is x(0) = lim D(x(s), s) as s -> 0 along the trajectory. "denoise" returns D (first
    order; what DDIM, k-diffusion and diffusers do). "extrapolate" extrapolates D to s = 0 with the
    Lagrange polynomial in s^2 through the last `order` points: p_s is a function of s^2 (the heat
    equation in t = s^2 / 2), so D along the probability-flow trajectory is smooth in s^2 and the error
    falls from O(sigma^2) to O(sigma^(2 order)) with no extra evaluation.
    """
    if final == "denoise" or state is None or order <= 1:
        return denoised
    u = [sigma**2] + [s**2 for s in state.sigmas[: order - 1]]
    Ds = [denoised, *state.outputs[: order - 1]]
    w = lagrange_weights(u, 0.0)
    return sum(wj * Dj for wj, Dj in zip(w, Ds))


def lagrange_weights(nodes: list[float], at: float) -> list[float]:
    """Weights w_j with p(at) = sum_j w_j f(nodes_j) for the interpolating polynomial p through the nodes."""
    w = []
    for j, uj in enumerate(nodes):
        wj = 1.0
        for k, uk in enumerate(nodes):
            if k != j:
                wj *= (at - uk) / (uj - uk)
        w.append(wj)
    return w
