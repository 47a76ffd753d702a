"""sCM / TrigFlow (noisecraft.distill.trigflow) on exact ground truth: the time maps round-trip, the boundary
f(x, 0) = x is exact, the teacher's TrigFlow velocity is the PF-ODE's, and the JVP tangent equals the derivative
along the trajectory."""

from __future__ import annotations

import math

import torch
from mixture_student import mixture

from noisecraft.distill import trigflow as T

F64, SD = torch.float64, 0.5


def _mixture_F(mix):
    """F of the exact mixture denoiser: D = cos(t) x_t - sin(t) sd F  =>  F = (cos(t) x_t - D) / (sin(t) sd)."""
    def F(x_scaled, t, cond=None):
        x_t = x_scaled * SD
        D = mix.denoise(x_t / torch.cos(t)[:, None], T.sigma_of_t(t, SD))
        return (torch.cos(t)[:, None] * x_t - D) / (torch.sin(t)[:, None] * SD)
    return F


def test_time_maps_round_trip():
    sigma = torch.logspace(-3, 2, 50, dtype=F64)
    torch.testing.assert_close(T.sigma_of_t(T.t_of_sigma(sigma, SD), SD), sigma, rtol=1e-12, atol=0)
    t = torch.linspace(0, 1.5, 50, dtype=F64)
    torch.testing.assert_close(T.t_of_sigma(T.sigma_of_t(t, SD), SD), t, rtol=1e-12, atol=1e-14)


def test_boundary_is_exact():
    x = torch.randn(16, 2, dtype=F64)
    f = T.consistency_fn(lambda xs, t, c: torch.full_like(xs, 1e6), x, torch.zeros(16, dtype=F64), SD)
    assert torch.equal(f, x)


def test_teacher_velocity_is_the_pf_ode():
    """On the mixture the VE PF-ODE step dx/dsigma = (x - D) / sigma, mapped to TrigFlow, equals a tiny exact ODE
    solve (the adaptive reference solver) differentiated by central difference."""
    mix = mixture()
    t, h = torch.full((8,), 0.8, dtype=F64), 1e-4
    x_t = torch.randn(8, 2, dtype=F64)
    v = T.teacher_velocity(mix.denoise, x_t, t, SD)
    ends = []
    for dt in (h, -h):
        x = x_t / math.cos(0.8)
        s0, s1 = SD * math.tan(0.8), SD * math.tan(0.8 + dt)
        ends.append(mix.ode_solution(x, s0, s1) * math.cos(0.8 + dt))
    torch.testing.assert_close(v, (ends[0] - ends[1]) / (2 * h), rtol=1e-5, atol=1e-5)


def test_jvp_tangent_equals_the_finite_difference():
    mix = mixture()
    F = _mixture_F(mix)
    t = torch.rand(32, dtype=F64) * 1.2 + 0.2
    x_t = torch.randn(32, 2, dtype=F64)
    dxdt = T.teacher_velocity(mix.denoise, x_t, t, SD)
    G = lambda x, tt: F(x / SD, tt)  # noqa: E731
    y, d_jvp = T.time_tangent(G, x_t, t, dxdt, "jvp")
    y2, d_fd = T.time_tangent(G, x_t, t, dxdt, "fd", h=1e-5)
    torch.testing.assert_close(y, y2)
    torch.testing.assert_close(d_jvp, d_fd, rtol=1e-6, atol=1e-6)


def test_scm_target_is_normalised_and_loss_gradient():
    g = T.scm_target(torch.randn(4, 2), torch.randn(4, 2), torch.randn(4, 2), torch.randn(4, 2),
                     torch.full((4,), 0.7, dtype=F64), SD, c=0.0)
    torch.testing.assert_close(g.norm(dim=1), torch.ones(4))
    w = torch.zeros(4)
    assert torch.equal(T.scm_loss(g, g, torch.zeros_like(g), w), torch.zeros(4))
