"""A predictor-corrector exponential integrator whose x0 estimate is interpolated in a Gaussian basis.

The data-prediction form of the probability-flow ODE is solved exactly in its linear part (Lu et al.
2022b, Eq. 8; VE view, alpha = 1):

    x_t = (sigma_t / sigma_s) x_s + sigma_t integral_{sigma_t}^{sigma_s} D(sigma) / sigma^2 d sigma.

DPM-Solver++ and UniPC interpolate D by a polynomial in lambda = -log sigma. Here D is the Lagrange
polynomial through the last k (sigma_j, D_j) in

    v(sigma) = 1 / sqrt(sigma^2 + sigma_data^2),

because for Gaussian data N(m, sigma_data^2 I) the exact trajectory has x - m proportional to
sqrt(sigma^2 + sigma_data^2), so D = m + sigma_data^2 (x - m) / (sigma^2 + sigma_data^2) is exactly linear in v:
the order-2 method is exact for such data at any step size, the interpolant stays bounded as sigma -> 0
(v(0) = 1 / sigma_data) and the step to sigma = 0 is an ordinary step. sigma_data is the data scale of
EDM's preconditioning (Karras et al. 2022, Table 1; 0.5 for data in [-1, 1]).

The weights w_j = sigma_t integral L_j(v(sigma)) / sigma^2 d sigma
              = integral_{sigma_t / sigma_s}^{1} L_j(v(sigma_t / u)) du        (u = sigma_t / sigma)
have smooth integrands and are computed by 16-point Gauss-Legendre quadrature.
As in UniPC (Zhao et al. 2023), the step is predictor (Adams-Bashforth: the k previous nodes) then, after
the next evaluation, corrector (Adams-Moulton: the new node and k previous ones) at no extra NFE.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from noisecraft.samplers._common import History, check_choice, check_range, push, run_multistep

_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)


def expint_weights(sigmas: tuple, sigma_s: float, sigma_t: float, sigma_data: float) -> list[float]:
    """w_j for nodes `sigmas` (newest first) over the step sigma_s -> sigma_t (sum_j w_j = 1 - sigma_t / sigma_s)."""
    v = [1 / math.sqrt(s * s + sigma_data**2) for s in sigmas]
    a = sigma_t / sigma_s
    u = 0.5 * (1 - a) * _GL_X + 0.5 * (1 + a)  # quadrature nodes in (a, 1)
    vu = u / np.sqrt(sigma_t**2 + (sigma_data * u) ** 2)  # v(sigma_t / u)
    w = []
    for j, vj in enumerate(v):
        L = np.ones_like(u)
        for k, vk in enumerate(v):
            if k != j:
                L = L * (vu - vk) / (vj - vk)
        w.append(float(0.5 * (1 - a) * np.dot(_GL_W, L)))
    return w


def _update(x_s, sigma_s: float, sigma_t: float, sigmas: tuple, outputs: tuple, sigma_data: float):
    x = (sigma_t / sigma_s) * x_s
    for w_j, D_j in zip(expint_weights(sigmas, sigma_s, sigma_t, sigma_data), outputs):
        x = x + w_j * D_j
    return x


def step_expint(x, sigma: float, sigma_next: float, denoised, state=None, *, order: int = 2,
                sigma_data: float = 0.5, corrector: bool = True):
    """One step: correct x with `denoised` (Adams-Moulton over the new node and `order` previous ones), then
    predict x_next (Adams-Bashforth over `order` nodes). `state.extra["x"]` is the corrected previous sample."""
    check_choice("expint order", order, (1, 2, 3))
    check_range("sigma_data", sigma_data, 1e-6)
    if state is not None and corrector:
        nodes = (sigma, *state.sigmas[:order])
        x = _update(state.extra["x"], state.sigmas[0], sigma, nodes, (denoised, *state.outputs[:order]), sigma_data)
    new = push(state, sigma, denoised, order, x=x)
    return _update(x, sigma, sigma_next, new.sigmas, new.outputs, sigma_data), new


@torch.no_grad()
def sample_expint(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, order: int = 2,
                  sigma_data: float = 0.5, corrector: bool = True):
    """The Gaussian-basis predictor-corrector exponential integrator (`step_expint`), one NFE per step.

    order 2 (default) is exact for Gaussian data and the most robust on coarse schedules; order 3 is more
    accurate on fine or optimised schedules but can overshoot on very coarse ones (benchmarks/samplers.md)."""
    check_choice("expint order", order, (1, 2, 3))
    check_range("sigma_data", sigma_data, 1e-6)
    return run_multistep(step_expint, denoiser, x, sigmas, cond, callback, order=order, sigma_data=sigma_data,
                         corrector=corrector)


__all__ = ["History", "expint_weights", "sample_expint", "step_expint"]
