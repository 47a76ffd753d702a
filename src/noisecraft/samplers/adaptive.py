"""The probability-flow ODE with an adaptive Runge-Kutta solver: the high-accuracy reference sampler.

In u = log(sigma) the ODE dx/dsigma = (x - D) / sigma (Karras et al. 2022, Eq. 3) becomes

    dx/du = x - D(x, e^u),

smooth and non-stiff from sigma_max down to tiny sigma. It is solved with Dormand & Prince's
RK5(4) pair (Dormand & Prince 1980, "A family of embedded Runge-Kutta formulae"; Hairer, Norsett & Wanner,
Solving ODEs I, Sec. II.5, Table 5.2) with FSAL, the standard step-size controller (II.4) and a
per-sample error norm (the worst sample decides), landing exactly on every level in `sigmas` (so the
callback sees them). The stretch below `sigma_floor` is one denoising step x(0) = D(x, sigma_floor),
exact to O(sigma_floor^2).
"""

from __future__ import annotations

import math

import torch

from noisecraft.samplers._common import check_range, check_sigmas, notify

# Dormand-Prince 5(4): nodes c, stages a, 5th-order weights b (= the last stage row, FSAL), error e = b - b_hat.
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)


def _error_norm(err, x, x_new, rtol, atol) -> float:
    scale = atol + rtol * torch.maximum(x.abs(), x_new.abs())
    return float((err / scale).pow(2).flatten(1).mean(1).sqrt().max())


def dopri5(f, x, u0: float, u1: float, h: float, rtol: float, atol: float, stats: dict, k1=None):
    """Integrate dx/du = f(u, x) from u0 to u1 (either direction); returns (x, k1 at u1, last good h)."""
    k1 = f(u0, x) if k1 is None else k1
    u, direction = u0, math.copysign(1.0, u1 - u0)
    while direction * (u1 - u) > 1e-12:
        h = direction * min(abs(h), abs(u1 - u))
        k = [k1]
        for i in range(1, 7):
            k.append(f(u + _C[i] * h, x + h * sum(a * kj for a, kj in zip(_A[i], k) if a != 0)))
        x_new = x + h * sum(b * kj for b, kj in zip(_A[6], k) if b != 0)
        err = _error_norm(h * sum(e * kj for e, kj in zip(_E, k) if e != 0), x, x_new, rtol, atol)
        factor = min(5.0, max(0.2, 0.9 * (err + 1e-16) ** -0.2))
        if err <= 1.0:
            u, x, k1 = u + h, x_new, k[6]
            stats["steps"] += 1
        else:
            stats["rejected"] += 1
        h = h * factor
    return x, k1, h


@torch.no_grad()
def sample_ode(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, rtol: float = 1e-5,
               atol: float = 1e-5, dtype: torch.dtype | None = torch.float64, sigma_floor: float = 1e-5,
               stats: dict | None = None):
    """Adaptive RK45 (Dormand-Prince) on the probability-flow ODE in log sigma; float64 by default.

    Only sigmas[0] fixes the problem; the other levels are points to land on. `stats`, if given, is
    filled with "nfe" (denoiser calls), "steps" (accepted) and "rejected".
    """
    check_range("rtol", rtol, 0.0)
    check_range("atol", atol, 0.0)
    check_range("sigma_floor", sigma_floor, 0.0)
    if rtol == 0 and atol == 0:
        check_range("rtol + atol", 0.0, 1e-300)
    sigmas = check_sigmas(sigmas, x)
    x_in = x
    x = x.to(dtype or (x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32))
    stats = {} if stats is None else stats
    stats.update(nfe=0, steps=0, rejected=0)

    def f(u, y):
        stats["nfe"] += 1
        return y - denoiser(y, torch.tensor(math.exp(u), dtype=torch.float64), cond).to(y.dtype)

    s = sigmas.tolist()
    k1, h = None, -0.1
    for i in range(len(s) - 1):
        u_i, target = math.log(max(s[i], sigma_floor)), max(s[i + 1], sigma_floor)
        k1 = f(u_i, x) if k1 is None else k1  # k1 = x - D(x, sigma_i)
        notify(callback, i, x, s[i], s[i + 1], x - k1)
        if math.log(target) < u_i:
            x, k1, h = dopri5(f, x, u_i, math.log(target), h, rtol, atol, stats, k1)
        if s[i + 1] == 0:
            x = x - k1  # D(x, sigma_floor)
    return x.to(x_in.dtype)
