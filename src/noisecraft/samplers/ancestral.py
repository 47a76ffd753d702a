"""DDPM ancestral sampling and DDIM as one VE-view step.

Both take the x0 estimate D = denoiser(x, sigma) and move to sigma_next by

    x_next = D + sigma_down * (x - D) / sigma + sigma_up * z,      z ~ N(0, I)

with (sigma_down, sigma_up) = `ancestral_split(sigma, sigma_next, eta)`:

- eta = 1 is DDPM's ancestral step, the exact posterior q(x_next | x, x0 = D) (Ho et al. 2020, Alg. 2
  and Eq. 7, "fixed_small" variance); on a subset of timesteps beta is 1 - abar_t / abar_next.
- eta in [0, 1] is DDIM (Song, Meng & Ermon 2021, Eq. 12); eta = 0 is deterministic. Multiplied by
  sqrt(abar_next) this is exactly Eq. 12 in the VP view.
- The same step is k-diffusion's Euler ancestral: an Euler step to sigma_down, then noise sigma_up.
"""

from __future__ import annotations

import torch

from noisecraft.core.random import randn_like
from noisecraft.samplers._common import ancestral_split, check_range, run_multistep


def ancestral_step(x, denoised, sigma: float, sigma_next: float, eta: float, generator=None):
    """One stateless step from sigma to sigma_next given the denoiser's x0 estimate."""
    sigma_down, sigma_up = ancestral_split(sigma, sigma_next, eta)
    x_next = denoised + (sigma_down / sigma) * (x - denoised)
    if sigma_up > 0:
        x_next = x_next + sigma_up * randn_like(x, generator)
    return x_next


def step_ddim(x, sigma: float, sigma_next: float, denoised, state=None, *, eta: float = 0.0, generator=None):
    """Stateless DDIM(eta) step (Song et al. 2021, Eq. 12); eta = 1 is DDPM / Euler ancestral."""
    check_range("DDIM eta", eta, 0.0, 1.0)
    return ancestral_step(x, denoised, sigma, sigma_next, eta, generator), None


@torch.no_grad()
def sample_ddim(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, eta: float = 0.0):
    """DDIM (Song et al. 2021, Eq. 12) with stochasticity eta in [0, 1]; eta = 1 is DDPM."""
    check_range("DDIM eta", eta, 0.0, 1.0)
    return run_multistep(step_ddim, denoiser, x, sigmas, cond, callback, eta=eta, generator=generator)


@torch.no_grad()
def sample_ddpm(denoiser, x, sigmas, *, cond=None, generator=None, callback=None):
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2) on any decreasing sigmas ending in 0."""
    return sample_ddim(denoiser, x, sigmas, cond=cond, generator=generator, callback=callback, eta=1.0)


@torch.no_grad()
def sample_euler_ancestral(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, eta: float = 1.0):
    """Euler ancestral (k-diffusion): the same step as DDIM(eta); kept as a name users look for."""
    check_range("Euler ancestral eta", eta, 0.0, 1.0)  # its own name in the error, not DDIM's
    return sample_ddim(denoiser, x, sigmas, cond=cond, generator=generator, callback=callback, eta=eta)
