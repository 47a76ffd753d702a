"""UniPC (Zhao et al. 2023): a unified predictor (UniP-p) and corrector (UniC-p) for the data-prediction
probability-flow ODE, in the VE view (alpha_t = 1) and lambda = -log(sigma).

Notation of the paper (Sec. 3, Alg. 1-2, "B(h)" variants Eq. 11): for a step from s0 to t with
h = lambda_t - lambda_s0 and previous points s_m at r_m = (lambda_{s_m} - lambda_s0) / h,

    D_m = (m_{s_m} - m_{s0}) / r_m                      (scaled differences of the x0 estimates m)
    x_t = (sigma_t / sigma_s0) x_s0 + (1 - e^-h) m_s0 - B(h) sum_m a_m D_m

with B(h) = h ("bh1") or e^h - 1 ("bh2") and a solving R a = g / B(h) (Vandermonde R_{km} = r_m^(k-1),
g_k = k! h phi_{k+1}(h)). UniP-p uses the p - 1 previous points (p = 2: a = 1/2); UniC-p adds the new
evaluation at t (r = 1; p = 1: a = 1/2) and raises the order to p + 1 at no extra NFE: the corrected x_t
is kept, and m_t (the model at the uncorrected x_t) is reused by the next predictor.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from noisecraft.samplers._common import FINAL_STEPS, History, check_choice, push, run_multistep, to_zero

VARIANTS = ("bh1", "bh2")


def unipc_coefficients(h: float, rks: list[float], variant: str, predictor: bool) -> tuple[list[float], float]:
    """(a, B(h)) for UniP (predictor=True, len(rks) = p - 1) or UniC (len(rks) = p - 1, plus r = 1)."""
    hh = -h  # data prediction integrates e^{-h}
    B_h = hh if variant == "bh1" else math.expm1(hh)
    rs = rks + [1.0]
    p = len(rs)
    h_phi_k, factorial, g = math.expm1(hh) / hh - 1, 1, []
    for k in range(1, p + 1):
        g.append(h_phi_k * factorial / B_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    R = np.array([[r ** (k - 1) for r in rs] for k in range(1, p + 1)])
    if predictor:
        if p == 1:
            return [], B_h
        return ([0.5] if p == 2 else list(np.linalg.solve(R[:-1, :-1], g[:-1]))), B_h
    return ([0.5] if p == 1 else list(np.linalg.solve(R, g))), B_h


def _uni_update(x, sigma_s0: float, sigma_t: float, m0, history: History, order: int, variant: str, m_t=None):
    """UniP-order (m_t None) or UniC-order (m_t = model at the predicted x_t) from s0 to t."""
    h = math.log(sigma_s0 / sigma_t)
    rks = [math.log(sigma_s0 / s_m) / h for s_m in history.sigmas[: order - 1]]
    a, B_h = unipc_coefficients(h, rks, variant, predictor=m_t is None)
    x_t = (sigma_t / sigma_s0) * x - math.expm1(-h) * m0
    terms = [(a_m, (m_m - m0) / r_m) for a_m, m_m, r_m in zip(a, history.outputs, rks)]
    if m_t is not None:
        terms.append((a[-1], m_t - m0))
    for a_m, D_m in terms:
        x_t = x_t - B_h * a_m * D_m
    return x_t


def step_unipc(x, sigma: float, sigma_next: float, denoised, state=None, *, order: int = 3, variant: str = "bh2",
               corrector: bool = True, final: str = "denoise", predictor_order: int | None = None):
    """One UniPC step: UniC corrects x with `denoised` (the model at this x), then UniP predicts x_next.

    predictor_order (<= order) lowers this step's UniP order; `state.extra` holds the previous step's
    corrected sample "x" and its predictor order "p" (the order of this step's UniC).
    """
    check_choice("UniPC order", order, (1, 2, 3))
    check_choice("UniPC variant", variant, VARIANTS)
    check_choice("final", final, FINAL_STEPS)
    if state is not None and corrector:
        prev = History(state.sigmas[1:], state.outputs[1:])
        x = _uni_update(state.extra["x"], state.sigmas[0], sigma, state.outputs[0], prev, state.extra["p"],
                        variant, m_t=denoised)
    if sigma_next == 0:
        return to_zero(denoised, state, sigma, order, final), push(state, sigma, denoised, order)
    p = min(predictor_order or order, 1 + len(state.sigmas) if state else 1)
    history = History(state.sigmas, state.outputs) if state else History()
    x_next = _uni_update(x, sigma, sigma_next, denoised, history, p, variant)
    return x_next, push(state, sigma, denoised, order, x=x, p=p)


@torch.no_grad()
def sample_unipc(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, order: int = 3,
                 variant: str = "bh2", corrector: bool = True, lower_order_final: bool = True,
                 final: str = "denoise"):
    """UniPC-p (Zhao et al. 2023, Alg. 1-2): UniP-p predictor + UniC-p corrector, order p + 1, 1 NFE per step.

    lower_order_final caps the predictor order at the number of steps left (diffusers' default, which
    steadies very short schedules).
    """
    check_choice("UniPC order", order, (1, 2, 3))
    n = len(sigmas) - 1
    index = iter(range(n))

    def step(x, sigma, sigma_next, denoised, state, **kw):
        left = n - next(index)
        return step_unipc(x, sigma, sigma_next, denoised, state, **kw,
                          predictor_order=min(order, left) if lower_order_final else order)

    return run_multistep(step, denoiser, x, sigmas, cond, callback, order=order, variant=variant,
                         corrector=corrector, final=final)
