"""Reverse-SDE samplers (Song et al. 2021) in the VE view, where every diffusion SDE is the VE SDE
dx = sqrt(d[sigma^2]/dt) dw after the scaling x = x_t / alpha_t (Karras et al. 2022, Eq. 4).

Score from the denoiser: grad log p(x; sigma) = (D(x, sigma) - x) / sigma^2 (Karras et al. 2022, Eq. 3).
The last step to sigma = 0 returns the mean (D, no noise): Song et al.'s final "denoising" step.
"""

from __future__ import annotations

import math

import torch

from noisecraft.core.random import randn_like
from noisecraft.errors import NoisecraftError
from noisecraft.samplers._common import check_choice, check_range, check_sigmas, notify, working
from noisecraft.samplers.ancestral import ancestral_step


def step_euler_maruyama(x, sigma: float, sigma_next: float, denoised, state=None, *, s_noise: float = 1.0,
                        generator=None):
    """Euler-Maruyama on the reverse VE SDE (Song et al. 2021, Eq. 6; the "reverse diffusion" predictor
    of Eq. 47): x_next = x + (sigma^2 - sigma_next^2) score + sqrt(sigma^2 - sigma_next^2) z."""
    check_range("s_noise", s_noise, 0.0)
    if sigma_next == 0:
        return denoised, None
    dvar = sigma**2 - sigma_next**2
    x = x + (dvar / sigma**2) * (denoised - x)
    return x + math.sqrt(dvar) * s_noise * randn_like(x, generator), None


NORMS = ("batch", "sample")


def langevin_step(x, sigma: float, denoised, snr: float, generator=None, norms: str = "batch"):
    """Langevin corrector (Song et al. 2021, Alg. 4, VE): eps = 2 (r ||z|| / ||g||)^2,
    x <- x + eps g + sqrt(2 eps) z with g the score at sigma and r = snr.

    norms="batch" averages the per-sample norms over the batch, as Song et al.'s code does (the step size
    then couples the samples of a batch); "sample" uses each sample's own norms (batch-size invariant,
    sound in high dimension where the norms concentrate, but unstable in a few dimensions, where a
    sample near a mode has ||g|| ~ 0 and takes a huge step)."""
    g = (denoised - x) / sigma**2
    z = randn_like(x, generator)
    nz, ng = z.flatten(1).norm(dim=1), g.flatten(1).norm(dim=1)
    if norms == "batch":
        nz, ng = nz.mean().expand_as(nz), ng.mean().expand_as(ng)
    eps = (2 * (snr * nz / ng.clamp_min(1e-30)) ** 2).reshape(-1, *([1] * (x.ndim - 1)))
    return x + eps * g + (2 * eps).sqrt() * z


PREDICTORS = ("euler_maruyama", "ancestral")


@torch.no_grad()
def sample_euler_maruyama(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, s_noise: float = 1.0):
    """Euler-Maruyama for the reverse SDE (`step_euler_maruyama`), one NFE per step."""
    return sample_pc(denoiser, x, sigmas, cond=cond, generator=generator, callback=callback, corrector_steps=0,
                     s_noise=s_noise)


@torch.no_grad()
def sample_pc(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, predictor: str = "euler_maruyama",
              corrector_steps: int = 1, snr: float = 0.16, norms: str = "batch", s_noise: float = 1.0):
    """Predictor-corrector sampling (Song et al. 2021, Alg. 1; VE form Alg. 2): a predictor step from
    sigma_i to sigma_{i+1} ("euler_maruyama" = reverse diffusion, or "ancestral" = DDPM), then
    `corrector_steps` Langevin steps at sigma_{i+1} (none at 0). NFE = n + corrector_steps (n - 1).
    snr: the signal-to-noise ratio r of the corrector (0.16 is the paper's VE CIFAR-10 value); norms: see
    `langevin_step`."""
    check_choice("predictor", predictor, PREDICTORS)
    check_choice("norms", norms, NORMS)
    check_range("snr", snr, 0.0)
    if isinstance(corrector_steps, bool) or not isinstance(corrector_steps, int) or corrector_steps < 0:
        raise NoisecraftError(f"corrector_steps must be an integer >= 0; got {corrector_steps!r}")
    sigmas = check_sigmas(sigmas, x)
    x_in, x = x, working(x)
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        denoised = denoiser(x, sigmas[i], cond).to(x.dtype)
        notify(callback, i, x, s[i], s[i + 1], denoised)
        if predictor == "ancestral":
            x = ancestral_step(x, denoised, s[i], s[i + 1], 1.0, generator)
        else:
            x, _ = step_euler_maruyama(x, s[i], s[i + 1], denoised, s_noise=s_noise, generator=generator)
        for _ in range(corrector_steps if s[i + 1] > 0 else 0):
            x = langevin_step(x, s[i + 1], denoiser(x, sigmas[i + 1], cond).to(x.dtype), snr, generator, norms)
    return x.to(x_in.dtype)
