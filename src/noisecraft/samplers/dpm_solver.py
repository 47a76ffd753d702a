"""DPM-Solver (Lu et al. 2022a) and DPM-Solver++ (Lu et al. 2022b): exponential integrators in
lambda = -log(sigma), here in the VE view (alpha_t = 1, sigma_t = sigma).

The probability-flow ODE solved exactly in its linear part (Lu et al. 2022b, Eq. 8, data prediction):

    x_t = (sigma_t / sigma_s) x_s + sigma_t * integral_{lambda_s}^{lambda_t} e^lambda D(x_lambda, lambda) d lambda

and (Lu et al. 2022a, Eq. 3.4, noise prediction eps = (x - D) / sigma):

    x_t = x_s - sigma_t * integral_{lambda_s}^{lambda_t} e^lambda eps(x_lambda, lambda) d lambda.

Symbols: h = lambda_t - lambda_s; r = ratio of the previous step to h; phi_1(h) = (1 - e^-h), phi_2, phi_3
the higher phi functions of the Taylor terms (k-diffusion's names). The step to sigma_t = 0 (lambda_t =
infinity) has only the first-order limit x_t = D, or `_common.to_zero` with final="extrapolate".
"""

from __future__ import annotations

import math

import torch

from noisecraft.core.random import randn_like
from noisecraft.samplers._common import (
    FINAL_STEPS,
    ancestral_split,
    check_choice,
    check_range,
    check_sigmas,
    notify,
    push,
    run_multistep,
    to_zero,
    variant,
    working,
)

SOLVER_TYPES = ("midpoint", "heun")


def _sigma(s: float) -> torch.Tensor:
    return torch.tensor(s, dtype=torch.float64)


def dpm_solver_update(denoiser, x, s: float, t: float, eps_s, order: int, cond):
    """DPM-Solver-2 (Lu et al. 2022a, Alg. 1 with r1 = 1/2) or DPM-Solver-3 (Alg. 2, r1 = 1/3, r2 = 2/3),
    one step from sigma s to sigma t > 0 given eps_s = (x - D(x, s)) / s. 1 or 2 extra NFE."""
    h = math.log(s / t)
    eps = lambda u, sig: (u - denoiser(u, _sigma(sig), cond).to(u.dtype)) / sig  # noqa: E731
    if order == 2:
        r1 = 0.5
        s1 = s * math.exp(-r1 * h)
        u1 = x - s1 * math.expm1(r1 * h) * eps_s
        return x - t * math.expm1(h) * eps_s - t / (2 * r1) * math.expm1(h) * (eps(u1, s1) - eps_s)
    r1, r2 = 1 / 3, 2 / 3
    s1, s2 = s * math.exp(-r1 * h), s * math.exp(-r2 * h)
    u1 = x - s1 * math.expm1(r1 * h) * eps_s
    D1 = eps(u1, s1) - eps_s
    u2 = x - s2 * math.expm1(r2 * h) * eps_s - s2 * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1) * D1
    D2 = eps(u2, s2) - eps_s
    return x - t * math.expm1(h) * eps_s - t / r2 * (math.expm1(h) / h - 1) * D2


@torch.no_grad()
def sample_dpm_solver(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, order: int = 2,
                      final: str = "denoise"):
    """Singlestep DPM-Solver-2 / -3 (Lu et al. 2022a, Alg. 1 and 2) with noise prediction; `order` NFE per
    step; the last step to 0 takes 1 NFE (first order, or `to_zero` with final="extrapolate")."""
    check_choice("DPM-Solver order", order, (2, 3))
    check_choice("final", final, FINAL_STEPS)
    sigmas = check_sigmas(sigmas, x)
    x_in, x = x, working(x)
    s, state = sigmas.tolist(), None
    for i in range(len(s) - 1):
        denoised = denoiser(x, sigmas[i], cond).to(x.dtype)
        notify(callback, i, x, s[i], s[i + 1], denoised)
        if s[i + 1] == 0:
            x = to_zero(denoised, state, s[i], order, final)
            break
        state = push(state, s[i], denoised, order)
        x = dpm_solver_update(denoiser, x, s[i], s[i + 1], (x - denoised) / s[i], order, cond)
    return x.to(x_in.dtype)


@torch.no_grad()
def sample_dpmpp_2s(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, eta: float = 0.0,
                    s_noise: float = 1.0, final: str = "denoise"):
    """DPM-Solver++(2S) (Lu et al. 2022b, Alg. 1, r = 1/2), 2 NFE per step (1 on the last step to 0).

    eta > 0 is k-diffusion's ancestral variant: the step goes to sigma_down, then noise sigma_up is added
    (`ancestral_split`); eta = 0 is the deterministic solver of the paper.
    """
    check_range("eta", eta, 0.0, 1.0)
    check_range("s_noise", s_noise, 0.0)
    check_choice("final", final, FINAL_STEPS)
    sigmas = check_sigmas(sigmas, x)
    x_in, x = x, working(x)
    s, state, r = sigmas.tolist(), None, 0.5
    for i in range(len(s) - 1):
        denoised = denoiser(x, sigmas[i], cond).to(x.dtype)
        notify(callback, i, x, s[i], s[i + 1], denoised)
        sigma_down, sigma_up = ancestral_split(s[i], s[i + 1], eta)
        if sigma_down == 0:
            x = to_zero(denoised, state, s[i], 2, final)
        else:
            h = math.log(s[i] / sigma_down)
            s1 = s[i] * math.exp(-r * h)
            u = (s1 / s[i]) * x - math.expm1(-r * h) * denoised
            D1 = denoiser(u, _sigma(s1), cond).to(x.dtype)
            D_hat = (1 - 1 / (2 * r)) * denoised + 1 / (2 * r) * D1
            x = (sigma_down / s[i]) * x - math.expm1(-h) * D_hat
        state = push(state, s[i], denoised, 2)
        if sigma_up > 0:
            x = x + sigma_up * s_noise * randn_like(x, generator)
    return x.to(x_in.dtype)


def _check_dpmpp(order, eta, solver_type, s_noise, final, legacy_3m):
    check_choice("DPM-Solver++ order", order, (1, 2, 3))
    check_choice("legacy_3m", legacy_3m, (False, True))
    check_range("eta", eta, 0.0)
    check_choice("solver_type", solver_type, SOLVER_TYPES)
    check_range("s_noise", s_noise, 0.0)
    check_choice("final", final, FINAL_STEPS)


def step_dpmpp(x, sigma: float, sigma_next: float, denoised, state=None, *, order: int = 2, eta: float = 0.0,
               solver_type: str = "midpoint", s_noise: float = 1.0, final: str = "denoise", legacy_3m: bool = False,
               generator=None):
    """Multistep DPM-Solver++ (Lu et al. 2022b): 2M is Alg. 2 (solver_type "midpoint"; "heun" uses the
    exact phi_2 of the linear interpolant), 3M the third-order multistep of App. B / k-diffusion; eta > 0
    gives the SDE variants (Lu et al. 2022b, Sec. 5 / Gonzalez et al. 2023, SEEDS: eta = 1 is "2M SDE"):

        x_t = (sigma_t / sigma_s) e^{-eta h} x_s + phi_1(h_eta) D_s + <phi_2, phi_3 terms>
              + sigma_t sqrt(1 - e^{-2 eta h}) z,        h_eta = (1 + eta) h.

    The third-order term integrates the interpolating quadratic exactly: with d1, d2 its Newton
    coefficients in units of h (P(s) = D + d1 s + d2 s^2), x += phi_2 d1 - 2 phi_3 d2. The DPM-Solver
    reference code, k-diffusion and diffusers use -phi_3 d2, half of that, so their "3M" converges at
    second order only (tests/samplers/test_convergence.py); legacy_3m=True reproduces them.
    The first steps use the orders their history allows (warm-up); the step to 0 returns `to_zero`.
    """
    _check_dpmpp(order, eta, solver_type, s_noise, final, legacy_3m)
    new_state = push(state, sigma, denoised, order)
    if sigma_next == 0:
        return to_zero(denoised, state, sigma, order, final), new_state
    h = math.log(sigma / sigma_next)
    h_eta = h * (1 + eta)
    phi_1 = -math.expm1(-h_eta)
    k = min(order, len(new_state.sigmas))
    x = (sigma_next / sigma) * math.exp(-eta * h) * x + phi_1 * denoised
    if k >= 2:
        D_1 = state.outputs[0]
        r0 = math.log(state.sigmas[0] / sigma) / h
        d1_0 = (denoised - D_1) / r0
        phi_2 = math.expm1(-h_eta) / h_eta + 1
        if k == 2:
            x = x + (0.5 * phi_1 if solver_type == "midpoint" else phi_2) * d1_0
        else:
            D_2 = state.outputs[1]
            r1 = math.log(state.sigmas[1] / state.sigmas[0]) / h
            d1_1 = (D_1 - D_2) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            phi_3 = phi_2 / h_eta - 0.5
            x = x + phi_2 * d1 - (1 if legacy_3m else 2) * phi_3 * d2
    if eta > 0:
        x = x + s_noise * sigma_next * math.sqrt(-math.expm1(-2 * eta * h)) * randn_like(x, generator)
    return x, new_state


@torch.no_grad()
def sample_dpmpp(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, order: int = 2,
                 eta: float = 0.0, solver_type: str = "midpoint", s_noise: float = 1.0, final: str = "denoise",
                 legacy_3m: bool = False):
    """Multistep DPM-Solver++ of any order 1-3 (`step_dpmpp`), one NFE per step."""
    _check_dpmpp(order, eta, solver_type, s_noise, final, legacy_3m)
    return run_multistep(step_dpmpp, denoiser, x, sigmas, cond, callback, order=order, eta=eta,
                         solver_type=solver_type, s_noise=s_noise, final=final, legacy_3m=legacy_3m,
                         generator=generator)


sample_dpmpp_2m = variant(sample_dpmpp, "sample_dpmpp_2m", "DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2).", order=2)
sample_dpmpp_3m = variant(sample_dpmpp, "sample_dpmpp_3m", "DPM-Solver++(3M) (Lu et al. 2022b, App. B).", order=3)
sample_dpmpp_2m_sde = variant(sample_dpmpp, "sample_dpmpp_2m_sde",
                              "DPM-Solver++(2M) SDE (eta = 1; Lu et al. 2022b, Sec. 5).", order=2, eta=1.0)
sample_dpmpp_3m_sde = variant(sample_dpmpp, "sample_dpmpp_3m_sde",
                              "DPM-Solver++(3M) SDE (eta = 1; k-diffusion's third-order extension).", order=3, eta=1.0)
sample_dpmpp_2s_ancestral = variant(sample_dpmpp_2s, "sample_dpmpp_2s_ancestral",
                                    "DPM-Solver++(2S) ancestral (eta = 1, k-diffusion).", eta=1.0)
sample_dpm_solver_3 = variant(sample_dpm_solver, "sample_dpm_solver_3",
                              "Singlestep DPM-Solver-3 (Lu et al. 2022a, Alg. 2).", order=3)
