"""Deterministic probability-flow ODE solvers in the VE view.

The probability-flow ODE (Song et al. 2021, Eq. 13) in the VE view with sigma(t) = t is
dx/dsigma = (x - D(x, sigma)) / sigma (Karras et al. 2022, Eq. 3 and Sec. 3).
"""

from __future__ import annotations

import torch

from noisecraft.samplers._common import check_sigmas, notify


def euler_step(x, denoised, sigma: float, sigma_next: float):
    """x + (sigma_next - sigma) * d with d = (x - D) / sigma (Karras et al. 2022, Alg. 1, line 5)."""
    return x + (sigma_next - sigma) * (x - denoised) / sigma


@torch.no_grad()
def sample_euler(denoiser, x, sigmas, *, cond=None, generator=None, callback=None):
    """Euler's method on the probability-flow ODE (first order; one NFE per step)."""
    sigmas = check_sigmas(sigmas, x)
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoiser(x, sigmas[i], cond)
        notify(callback, i, x, s, s_next, denoised)
        x = euler_step(x, denoised, s, s_next)
    return x


@torch.no_grad()
def sample_heun(denoiser, x, sigmas, *, cond=None, generator=None, callback=None):
    """Heun's 2nd-order method (Karras et al. 2022, Alg. 1, churn-free); Euler on the last step to 0.

    2 NFE per step except the last (1 NFE): 2n - 1 in total for n steps.
    """
    sigmas = check_sigmas(sigmas, x)
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoiser(x, sigmas[i], cond)
        notify(callback, i, x, s, s_next, denoised)
        x_euler = euler_step(x, denoised, s, s_next)
        if s_next == 0:
            x = x_euler
            continue
        denoised_next = denoiser(x_euler, sigmas[i + 1], cond)
        d = (x - denoised) / s
        d_next = (x_euler - denoised_next) / s_next
        x = x + (s_next - s) * 0.5 * (d + d_next)
    return x
