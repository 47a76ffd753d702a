"""Multistep consistency sampling (Song et al. 2023, "Consistency Models", Alg. 1).

A consistency model f(x, sigma) maps any point of a probability-flow trajectory to its origin, so one call
from x_T = sigma_max z already gives a sample: x <- f(x_T, T). Each further step re-noises the sample to a lower
level tau_n and maps it back:

    x_hat = x + sqrt(tau_n^2 - eps^2) z,    x <- f(x_hat, tau_n),

where eps is the model's boundary level (f(x, eps) = x, so x itself sits at noise level eps). Here the
levels are the sampling schedule: f is evaluated at sigmas[0] = T, sigmas[1], ..., sigmas[n - 1] (one NFE per
step), re-noising from the previous f to each; the final 0 is where the last f lands. Step schedule
"consistency" (`schedules.get_sigmas`) spaces those levels as Karras et al.'s rho = 7 ramp without its last
level eps. The denoiser passed in is the consistency function itself (a student of `noisecraft distill`, or any
wrapper around one, such as guidance).
"""

from __future__ import annotations

import math

import torch

from noisecraft.core.random import randn_like
from noisecraft.errors import NoisecraftError
from noisecraft.samplers._common import check_range, check_sigmas, notify, working


def boundary_of(denoiser) -> float:
    """The boundary level eps of a consistency student (its `prediction.boundary_sigma`), 0 when unknown."""
    prediction = getattr(denoiser, "prediction", None)
    return float(getattr(prediction, "boundary_sigma", None) or 0.0)


@torch.no_grad()
def sample_consistency(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, sigma_min: float = 0.0):
    """CM Alg. 1: x <- f(x, sigmas[0]); then for each later level tau: x <- f(x + sqrt(tau^2 - eps^2) z, tau).

    sigma_min is eps; 0 (the default) takes the denoiser's own boundary where it carries one (a student), else 0.
    Every re-noising level must lie above eps. One NFE per step; stochastic (fresh z from `generator`)."""
    check_range("sigma_min", sigma_min, 0.0)
    sigmas = check_sigmas(sigmas, x)
    eps = sigma_min or boundary_of(denoiser)
    s = sigmas.tolist()
    if len(s) > 2 and min(s[1:-1]) <= eps:
        raise NoisecraftError(f"consistency sampling re-noises to every level but the first; each must be above "
                              f"the boundary sigma_min = {eps:g}, got {min(s[1:-1]):g}")
    x_in, x = x, working(x)
    for i in range(len(s) - 1):
        if i > 0:
            x = x + math.sqrt(s[i] ** 2 - eps**2) * randn_like(x, generator)
        denoised = denoiser(x, sigmas[i], cond).to(x.dtype)
        notify(callback, i, x, s[i], s[i + 1], denoised)
        x = denoised
    return x.to(x_in.dtype)
