"""Shared sampler helpers: input checks, the loop's callback, the ancestral split (DESIGN habit 6).

Callback contract: after each denoiser evaluation a sampler calls `callback(info)` with the dict

    {"i": step index (0-based), "x": the noisy sample the denoiser saw, "sigma": its noise level
     (float), "sigma_next": the level the step goes to (float), "denoised": the x0 estimate}

Returning a value from the callback has no effect.
"""

from __future__ import annotations

import math

import torch

from noisecraft.errors import NoisecraftError


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


def notify(callback, i: int, x, sigma, sigma_next, denoised) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": float(sigma), "sigma_next": float(sigma_next), "denoised": denoised})


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
