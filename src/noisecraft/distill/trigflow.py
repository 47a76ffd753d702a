"""Continuous-time consistency models in TrigFlow form: sCM (Lu & Song 2024, "Simplifying, Stabilizing and
Scaling Continuous-Time Consistency Models"), as pure functions over the project's VE denoiser.

Notation (Lu & Song 2024, Sec. 2-4): x_t = cos(t) x0 + sin(t) z with z ~ N(0, sigma_d^2 I), t in [0, pi/2]; the
consistency function f(x_t, t) = cos(t) x_t - sin(t) sigma_d F(x_t / sigma_d, t) (Eq. 1 with the TrigFlow
parameterisation, Sec. 3), so f(x, 0) = x exactly; F^- the network under stop-gradient.

VE view (DESIGN.md, x = x0 + sigma n): dividing x_t by cos(t) gives x0 + tan(t) sigma_d n, so

    sigma = sigma_d tan(t),    x = x_t / cos(t),    t = arctan(sigma / sigma_d).

Under these maps the EDM preconditioning (c_skip = sigma_d^2 / (sigma^2 + sigma_d^2) = cos^2 t, c_out =
sigma sigma_d / sqrt(sigma^2 + sigma_d^2) = sigma_d sin t, c_in = 1 / sqrt(sigma^2 + sigma_d^2) = cos(t) / sigma_d,
Karras et al. 2022, Table 1) makes D(x, sigma) = cos(t) x_t + sin(t) sigma_d F_edm(x_t / sigma_d): the TrigFlow
consistency function with F = -F_edm. An sCM student is therefore an EDM-preconditioned run; its boundary is
sigma = 0 (t = 0), and it samples with `samplers` "consistency" (CM Alg. 1) like any other student.

| function              | what                                                                  | paper            |
|-----------------------|-----------------------------------------------------------------------|------------------|
| `sigma_of_t` / `t_of_sigma` | the TrigFlow <-> VE time maps above                             | Sec. 3           |
| `consistency_fn`      | f = cos(t) x_t - sin(t) sigma_d F(x_t / sigma_d, t)                   | Sec. 3, Eq. 3    |
| `network_F`           | F(x_t / sigma_d, t) of a VE denoiser with EDM preconditioning         | Sec. 3           |
| `teacher_velocity`    | dx_t/dt = (cos(t) x_t - D(x_t / cos t, sigma_d tan t)) / sin(t)       | Eq. 4 (PF-ODE)   |
| `data_velocity`       | sCT's estimate dx_t/dt = cos(t) z - sin(t) x0                         | Sec. 4, Alg. 1   |
| `time_tangent`        | dF^-/dt along the trajectory (JVP or central difference)             | Sec. 4.1, Eq. 8  |
| `scm_target`          | g = -cos^2 t (sd F^- - dx_t/dt) - r cos t sin t (x_t + sd dF^-/dt) | Sec. 4.2, Alg. 1 |
| `sample_t`            | tan(t) = e^tau / sigma_d, tau ~ N(P_mean, P_std^2)                    | Sec. 4.3         |
| `scm_loss`            | e^w(t) / D ||F_theta - F^- - g||^2 - w(t)                             | Sec. 4.3, Eq. 9  |
| `scd_loss`            | one sCD step's per-sample loss (the pieces above, teacher's velocity) | Alg. 1 (sCD)     |
| `AdaptiveWeight`      | the learned w_phi(t)                                                  | Sec. 4.3         |
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from noisecraft.errors import NoisecraftError

TANGENTS = ("jvp", "fd")


class NoForwardMode(NoisecraftError):
    """The network has a layer without a forward-mode (JVP) rule: use the central-difference tangent."""


def _b(v: Tensor, x: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) to broadcast against x (keeps v's dtype)."""
    return v.reshape(-1, *([1] * (x.ndim - 1)))


def sigma_of_t(t: Tensor, sigma_d: float) -> Tensor:
    """sigma = sigma_d tan(t): the VE noise level of TrigFlow time t (module docstring)."""
    return sigma_d * torch.tan(t)


def t_of_sigma(sigma: Tensor, sigma_d: float) -> Tensor:
    """t = arctan(sigma / sigma_d), the inverse of `sigma_of_t` on [0, pi/2)."""
    return torch.atan(sigma / sigma_d)


def consistency_fn(F, x_t: Tensor, t: Tensor, sigma_d: float, cond=None) -> Tensor:
    """f(x_t, t) = cos(t) x_t - sin(t) sigma_d F(x_t / sigma_d, t, cond) (Lu & Song 2024, Sec. 3); f(x, 0) = x."""
    return _b(torch.cos(t), x_t) * x_t - _b(torch.sin(t), x_t) * sigma_d * F(x_t / sigma_d, t, cond)


def network_F(denoiser, x_t: Tensor, t: Tensor, cond=None) -> Tensor:
    """F(x_t / sigma_d, t) of an EDM-preconditioned VE `denoiser`: -F_edm(c_in x, c_noise) at x = x_t / cos(t),
    sigma = sigma_d tan(t) (module docstring), as a function of (x_t, t) so that a JVP reaches both; in x_t's
    dtype, at least float32."""
    sigma_d = denoiser.prediction.sigma_data
    x = x_t / _b(torch.cos(t), x_t)
    return -denoiser.raw(x, sigma_of_t(t, sigma_d), cond).to(torch.promote_types(x_t.dtype, torch.float32))


def teacher_velocity(teacher, x_t: Tensor, t: Tensor, sigma_d: float, cond=None) -> Tensor:
    """dx_t/dt of the teacher's probability-flow ODE in TrigFlow time, from its VE denoiser D:
    dx_t/dt = (cos(t) x_t - D(x_t / cos t, sigma_d tan t)) / sin(t) (the VE PF-ODE dx/dsigma = (x - D) / sigma
    (Karras et al. 2022, Eq. 3) under x_t = cos(t) x, sigma = sigma_d tan(t); Lu & Song 2024, Eq. 4); t > 0."""
    cos, sin = _b(torch.cos(t), x_t), _b(torch.sin(t), x_t)
    D = teacher(x_t / cos, sigma_of_t(t, sigma_d), cond).to(x_t.dtype)
    return (cos * x_t - D) / sin


def data_velocity(x0: Tensor, z: Tensor, t: Tensor) -> Tensor:
    """sCT's unbiased dx_t/dt = cos(t) z - sin(t) x0 for x_t = cos(t) x0 + sin(t) z (Lu & Song 2024, Alg. 1)."""
    return _b(torch.cos(t), x0) * z - _b(torch.sin(t), x0) * x0


def time_tangent(F, x_t: Tensor, t: Tensor, dxdt: Tensor, kind: str = "jvp", h: float = 1e-3):
    """(F(x_t, t), dF/dt) with dF/dt = d/dt F(x_t(t), t) along the trajectory (tangent (dx_t/dt, 1)), without
    gradient: "jvp" forward-mode autodiff (torch.func.jvp, Lu & Song 2024, Sec. 4.1), "fd" the central difference
    (F(x_t + h v, t + h) - F(x_t - h v, t - h)) / 2h (a fallback for networks without forward-mode rules)."""
    with torch.no_grad():
        if kind == "jvp":
            try:
                return torch.func.jvp(F, (x_t, t), (dxdt, torch.ones_like(t)))
            except (RuntimeError, NotImplementedError) as e:
                raise NoForwardMode(f"the network has no forward-mode (JVP) rule for one of its layers ({e}); "
                                      f"use distill.scm_tangent=fd (allowed: {', '.join(TANGENTS)})") from None
        if kind == "fd":
            hi, lo = F(x_t + h * dxdt, t + h), F(x_t - h * dxdt, t - h)
            return F(x_t, t), (hi - lo) / (2 * h)
    raise NoisecraftError(f"unknown tangent {kind!r}; allowed: {', '.join(TANGENTS)}")


def scm_target(F_minus: Tensor, dF_dt: Tensor, x_t: Tensor, dxdt: Tensor, t: Tensor, sigma_d: float, *,
               r: float = 1.0, c: float = 0.1) -> Tensor:
    """g = -cos^2(t) (sigma_d F^- - dx_t/dt) - r cos(t) sin(t) (x_t + sigma_d dF^-/dt), then g / (||g|| + c)
    (Lu & Song 2024, Alg. 1: cos(t) df^-/dt with the tangent warm-up r (Sec. 4.2) and tangent normalisation
    (Sec. 4.2, c = 0.1); the norm per sample, over all its elements)."""
    cos, sin = _b(torch.cos(t), x_t).to(x_t.dtype), _b(torch.sin(t), x_t).to(x_t.dtype)
    g = -cos**2 * (sigma_d * F_minus - dxdt) - r * cos * sin * (x_t + sigma_d * dF_dt)
    norm = g.flatten(1).norm(dim=1)
    return g / _b(norm + c, g)


def sample_t(B: int, generator: torch.Generator, sigma_d: float, *, p_mean: float = -1.0, p_std: float = 1.4,
             sigma_min: float = 0.002, sigma_max: float = 80.0) -> Tensor:
    """t = arctan(e^tau / sigma_d), tau ~ N(P_mean, P_std^2) (Lu & Song 2024, Sec. 4.3: the EDM lognormal in
    TrigFlow time), kept within the run's [sigma_min, sigma_max]; (B,) float64."""
    tau = p_mean + p_std * torch.randn(B, generator=generator, dtype=torch.float64)
    sigma = tau.exp().clamp(sigma_min, sigma_max)
    return t_of_sigma(sigma, sigma_d)


def scm_loss(F_theta: Tensor, F_minus: Tensor, g: Tensor, w: Tensor | None = None) -> Tensor:
    """Per-sample e^w(t) / D ||F_theta - F^- - g||^2 - w(t) (Lu & Song 2024, Eq. 9 and Alg. 1; D the data
    dimension; w None: the unweighted mean squared error). Its gradient in theta is that of the continuous-time CM
    objective, -2 e^w g . grad F_theta / D, since F_theta - F^- is 0 in value."""
    mse = (F_theta.float() - F_minus.float() - g.float()).square().flatten(1).mean(1)
    return mse if w is None else torch.exp(w) * mse - w


class AdaptiveWeight(nn.Module):
    """w_phi(t): a linear layer on Fourier features of c_noise(t) = ln(tan t) / 4 (Lu & Song 2024, Sec. 4.3, the
    adaptive weighting, learned with the objective; zero-initialised, so it starts at w = 0)."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.register_buffer("freqs", torch.randn(channels // 2, generator=torch.Generator().manual_seed(0)) * 4)
        self.linear = nn.Linear(channels, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, t: Tensor) -> Tensor:
        c = (torch.log(torch.tan(t)) / 4).float().reshape(-1, 1) * self.freqs[None] * 2 * math.pi
        return self.linear(torch.cat([torch.cos(c), torch.sin(c)], 1) * math.sqrt(2)).squeeze(1)  # (B,)


def scd_loss(student, teacher, x0: Tensor, z: Tensor, t: Tensor, cond=None, *, frozen=None, r: float = 1.0,
             c: float = 0.1, tangent: str = "jvp", h: float = 1e-3, seed: int | None = None,
             weight: nn.Module | None = None) -> Tensor:
    """Per-sample loss of continuous-time consistency distillation, sCD (Lu & Song 2024, Alg. 1 with a
    teacher), (B,):

        x_t = cos(t) x0 + sin(t) sigma_d z            (z ~ N(0, I), so sigma_d z ~ N(0, sigma_d^2 I))
        dx_t/dt = the teacher's PF-ODE velocity       (`teacher_velocity`, its VE denoiser D)
        F^-, dF^-/dt = `time_tangent` of F^- along (dx_t/dt, 1)   (F^- = the student's own network, no gradient)
        g = `scm_target`(F^-, dF^-/dt, ...)           (tangent warm-up r, normalisation c)
        loss = ||F_theta(x_t, t) - F^- - g||^2 / D    (`scm_loss`; with the adaptive `weight` w_phi:
                                                       e^w(t) ||...||^2 / D - w(t), Eq. 9)

    `student` is the EDM-preconditioned VE denoiser the gradient flows through (a data-parallel wrapper may be
    its network); `frozen` the same parameters to evaluate F^- and its tangent with (default `student`).
    t (B,) float64 in (0, pi/2). `seed` reseeds torch before every network evaluation, so that dropout draws one
    mask for F^-, its tangent and F_theta (one network function)."""
    frozen = student if frozen is None else frozen
    sd = student.prediction.sigma_data
    cos, sin = _b(torch.cos(t), x0).to(x0.dtype), _b(torch.sin(t), x0).to(x0.dtype)
    x_t = cos * x0 + sin * sd * z
    with torch.no_grad():
        dxdt = teacher_velocity(teacher, x_t, t, sd, cond).float()

    def reseed():
        if seed is not None:
            torch.manual_seed(seed)

    def F_minus(x, tt):
        reseed()
        return network_F(frozen, x, tt, cond)

    F_m, dF_dt = time_tangent(F_minus, x_t, t, dxdt, tangent, h)
    g = scm_target(F_m, dF_dt, x_t, dxdt, t, sd, r=r, c=c)
    reseed()
    return scm_loss(network_F(student, x_t, t, cond), F_m, g, None if weight is None else weight(t))
