"""Linear multistep methods on the noise estimate eps = (x - D) / sigma = dx/dsigma (VE view, Karras et al.
2022, Eq. 3): x_t = x_s + integral_{sigma_s}^{sigma_t} eps(sigma) d sigma with eps replaced by the
Lagrange polynomial P through the last k (sigma_j, eps_j), integrated exactly:

    x_t = x_s + sum_j c_j eps_j,     c_j = integral_{sigma_s}^{sigma_t} L_j(v(sigma)) d sigma

- LMS (k-diffusion's `sample_lms`, the variable-step Adams-Bashforth method): v = sigma.
- DEIS (Zhang & Chen 2023, Sec. 4, "rho AB-DEIS" with the log-rho basis of diffusers' "logrho"): v = log
  sigma (rho = sigma in the VE view); integral of e^u L_j(u) du in closed form.

Both can reach sigma_t = 0 with an ordinary step (final="step", as k-diffusion and diffusers do), or end
like the data-prediction solvers: final="denoise" returns D, final="extrapolate" `_common.to_zero`.
The first k - 1 steps use the orders their history allows.
"""

from __future__ import annotations

import math

import torch

from noisecraft.samplers._common import FINAL_STEPS, History, check_choice, push, run_multistep, to_zero

EPS_FINAL_STEPS = ("step",) + FINAL_STEPS


def _basis_coefficients(nodes: list[float], j: int) -> list[float]:
    """Power-series coefficients (constant first) of the Lagrange basis polynomial L_j through `nodes`."""
    coef, denom = [1.0], 1.0
    for k, v in enumerate(nodes):
        if k != j:
            coef = [0.0] + coef  # multiply by (u - v)
            for i in range(len(coef) - 1):
                coef[i] -= v * coef[i + 1]
            denom *= nodes[j] - v
    return [c / denom for c in coef]


def _horner(coef: list[float], u: float) -> float:
    out = 0.0
    for c in reversed(coef):
        out = out * u + c
    return out


def lms_coefficients(sigmas: tuple, sigma_next: float) -> list[float]:
    """c_j = integral_{sigmas[0]}^{sigma_next} L_j(sigma) d sigma for nodes `sigmas` (newest first)."""
    c = []
    for j in range(len(sigmas)):
        P = _basis_coefficients(list(sigmas), j)
        Q = [0.0] + [a / (i + 1) for i, a in enumerate(P)]  # antiderivative
        c.append(_horner(Q, sigma_next) - _horner(Q, sigmas[0]))
    return c


def deis_coefficients(sigmas: tuple, sigma_next: float) -> list[float]:
    """c_j = integral_{sigmas[0]}^{sigma_next} L_j(log sigma) d sigma = [e^u Q_j(u)] with u = log sigma and
    Q_j = L_j - L_j' + L_j'' - ... (so that (e^u Q_j)' = e^u L_j); e^u Q_j(u) -> 0 as sigma -> 0."""
    u = [math.log(s) for s in sigmas]
    c = []
    for j in range(len(sigmas)):
        Q, P = [0.0] * len(sigmas), _basis_coefficients(u, j)
        for n in range(len(P)):
            for i, a in enumerate(P):
                Q[i] += (-1) ** n * a
            P = [a * (i + 1) for i, a in enumerate(P[1:])]  # derivative
        at_next = sigma_next * _horner(Q, math.log(sigma_next)) if sigma_next > 0 else 0.0
        c.append(at_next - sigmas[0] * _horner(Q, u[0]))
    return c


def _eps_step(coefficients, x, sigma, sigma_next, denoised, state, order, final):
    """state.outputs: eps history; state.extra["D"]: the x0 estimates, for final="denoise" / "extrapolate"."""
    check_choice("final", final, EPS_FINAL_STEPS)
    Ds = (denoised, *(state.extra["D"] if state else ()))[:order]
    new_state = push(state, sigma, (x - denoised) / sigma, order, D=Ds)
    if sigma_next == 0 and final != "step":
        return to_zero(denoised, History(state.sigmas, Ds[1:]) if state else None, sigma, order, final), new_state
    for c_j, eps_j in zip(coefficients(new_state.sigmas, sigma_next), new_state.outputs):
        x = x + c_j * eps_j
    return x, new_state


def step_lms(x, sigma: float, sigma_next: float, denoised, state=None, *, order: int = 4, final: str = "step"):
    """Linear multistep in sigma (k-diffusion LMS; variable-step Adams-Bashforth of order `order` <= 4)."""
    check_choice("LMS order", order, (1, 2, 3, 4))
    return _eps_step(lms_coefficients, x, sigma, sigma_next, denoised, state, order, final)


def step_deis(x, sigma: float, sigma_next: float, denoised, state=None, *, order: int = 3, final: str = "step"):
    """DEIS (Zhang & Chen 2023): exponential-integrator multistep with eps interpolated in log sigma."""
    check_choice("DEIS order", order, (1, 2, 3))
    return _eps_step(deis_coefficients, x, sigma, sigma_next, denoised, state, order, final)


@torch.no_grad()
def sample_lms(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, order: int = 4,
               final: str = "step"):
    """LMS (k-diffusion): `step_lms`, one NFE per step."""
    check_choice("LMS order", order, (1, 2, 3, 4))
    check_choice("final", final, EPS_FINAL_STEPS)
    return run_multistep(step_lms, denoiser, x, sigmas, cond, callback, order=order, final=final)


@torch.no_grad()
def sample_deis(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, order: int = 3,
                final: str = "step"):
    """DEIS (Zhang & Chen 2023, log-rho AB): `step_deis`, one NFE per step."""
    check_choice("DEIS order", order, (1, 2, 3))
    check_choice("final", final, EPS_FINAL_STEPS)
    return run_multistep(step_deis, denoiser, x, sigmas, cond, callback, order=order, final=final)
