"""Euler and Heun (EDM) on the probability-flow ODE in the VE view.

The probability-flow ODE (Song et al. 2021, Eq. 13) in the VE view with sigma(t) = t is
dx/dsigma = (x - D(x, sigma)) / sigma (Karras et al. 2022, Eq. 3 and Sec. 3).
"""

from __future__ import annotations

import math

import torch

from noisecraft.core.random import randn_like
from noisecraft.samplers._common import (
    FINAL_STEPS,
    check_choice,
    check_range,
    check_sigmas,
    notify,
    push,
    run_multistep,
    to_zero,
    working,
)


def euler_step(x, denoised, sigma: float, sigma_next: float):
    """x + (sigma_next - sigma) * d with d = (x - D) / sigma (Karras et al. 2022, Alg. 1, line 5)."""
    return x + (sigma_next - sigma) * (x - denoised) / sigma


def step_euler(x, sigma: float, sigma_next: float, denoised, state=None):
    """Stateless Euler step (state is unused and stays None)."""
    return euler_step(x, denoised, sigma, sigma_next), None


@torch.no_grad()
def sample_euler(denoiser, x, sigmas, *, cond=None, generator=None, callback=None):
    """Euler's method on the probability-flow ODE (first order; one NFE per step)."""
    return run_multistep(step_euler, denoiser, x, sigmas, cond, callback)


def churn_gamma(sigma: float, steps: int, s_churn: float, s_tmin: float, s_tmax: float) -> float:
    """gamma_i = min(S_churn / N, sqrt(2) - 1) if S_tmin <= sigma_i <= S_tmax else 0 (Karras et al. 2022, Alg. 2)."""
    return min(s_churn / steps, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0


def _check_churn(s_churn, s_tmin, s_tmax, s_noise, final):
    check_range("s_churn", s_churn, 0.0)
    check_range("s_tmin", s_tmin, 0.0)
    check_range("s_tmax", s_tmax, 0.0)
    check_range("s_noise", s_noise, 0.0)
    check_choice("final", final, FINAL_STEPS)


@torch.no_grad()
def sample_heun(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, s_churn: float = 0.0,
                s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0, final: str = "denoise"):
    """Heun's 2nd-order method, Karras et al. 2022, Alg. 1 (s_churn = 0, deterministic) and Alg. 2 (stochastic).

    Alg. 2: raise the noise from t_i to t_hat = t_i (1 + gamma_i) with fresh noise of std
    sqrt(t_hat^2 - t_i^2) S_noise (line 5-6), then an Euler step from t_hat (line 7-8) with Heun's
    correction (line 9-11) unless t_{i+1} = 0. 2 NFE per step except the last (1 NFE): 2n - 1 in total.
    The last step to 0 is Euler (= D) or, with final="extrapolate", `_common.to_zero` of order 2.
    """
    _check_churn(s_churn, s_tmin, s_tmax, s_noise, final)
    sigmas = check_sigmas(sigmas, x)
    x_in, x = x, working(x)
    s, n, state = sigmas.tolist(), len(sigmas) - 1, None
    for i in range(n):
        gamma = churn_gamma(s[i], n, s_churn, s_tmin, s_tmax) if s_churn > 0 else 0.0
        s_hat = s[i] * (1 + gamma)
        if gamma > 0:
            x = x + math.sqrt(s_hat**2 - s[i] ** 2) * s_noise * randn_like(x, generator)
        denoised = denoiser(x, torch.tensor(s_hat, dtype=torch.float64) if gamma > 0 else sigmas[i], cond).to(x.dtype)
        notify(callback, i, x, s_hat, s[i + 1], denoised)
        if s[i + 1] == 0:
            x = to_zero(denoised, state, s_hat, 2, final)
            break
        state = push(state, s_hat, denoised, 1)
        x_euler = euler_step(x, denoised, s_hat, s[i + 1])
        denoised_next = denoiser(x_euler, sigmas[i + 1], cond).to(x.dtype)
        d, d_next = (x - denoised) / s_hat, (x_euler - denoised_next) / s[i + 1]
        x = x + (s[i + 1] - s_hat) * 0.5 * (d + d_next)
    return x.to(x_in.dtype)
