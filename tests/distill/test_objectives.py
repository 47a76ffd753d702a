"""The consistency parameterisation, the teacher step and the objectives against exact answers."""

from __future__ import annotations

import math

import pytest
import torch

from analytic import GaussianMixture
from noisecraft import samplers
from noisecraft.core.denoiser import Denoiser
from noisecraft.core.prediction import PREDICTIONS, Prediction
from noisecraft.distill import objectives as O
from noisecraft.errors import NoisecraftError
from noisecraft.schedules import get_sigmas
from noisecraft.schedules.training import build_schedule

MIX = GaussianMixture([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]], [0.15, 0.2, 0.1, 0.15],
                      [1.0, 2.0, 1.5, 1.0])
F64 = torch.float64


def _ode_map(x, sigma: float):
    """The exact consistency function: the probability-flow ODE from sigma to 0 (the adaptive reference)."""
    return samplers.get("ode")(MIX.denoise, x, torch.tensor([sigma, 0.0], dtype=F64), rtol=1e-9, atol=1e-9)


class _RandomNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, x, c_noise, cond=None):
        return 50 * self.lin(torch.cat([x, c_noise.reshape(-1, 1).to(x.dtype)], 1))


@pytest.mark.parametrize("kind", PREDICTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_boundary_condition_is_exact(kind, dtype):
    """f(x, eps) = x bit for bit, whatever the network outputs, for every prediction type."""
    eps = 0.002
    f = Denoiser(_RandomNet().to(dtype), build_schedule("edm"), Prediction(kind, boundary_sigma=eps))
    x = 3 * torch.randn(64, 2, dtype=dtype, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(f(x, eps), x)
        assert not torch.allclose(f(x, 0.5), x)
    c_skip, c_out = f.prediction.scalings(torch.tensor([eps], dtype=F64))
    assert float(c_skip) == 1.0 and float(c_out) == 0.0


@pytest.mark.parametrize("kind", PREDICTIONS)
def test_consistency_scalings_tend_to_the_kinds_own(kind):
    """Away from eps the student's scalings are its teacher's (so a student starts as its teacher)."""
    sigma = torch.tensor([20.0, 80.0], dtype=F64)
    plain, cm = Prediction(kind), Prediction(kind, boundary_sigma=0.002)
    for a, b in zip(plain.scalings(sigma), cm.scalings(sigma)):
        torch.testing.assert_close(b, a, rtol=2e-3, atol=1e-4)
    with pytest.raises(ValueError, match="no denoising target"):
        cm.target(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 1))


def test_the_consistency_function_is_the_pf_ode_solution_map():
    """Along one probability-flow trajectory the ODE map gives one endpoint (self-consistency, Song et al. 2023,
    Def. 1), equal to scipy's DOP853 solution; the CD objective with the exact teacher step vanishes at it and not
    at the denoiser D."""
    g = torch.Generator().manual_seed(1)
    x_T = 80.0 * torch.randn(16, 2, dtype=F64, generator=g)
    end = _ode_map(x_T, 80.0)
    torch.testing.assert_close(end, MIX.ode_solution(x_T, 80.0), rtol=0, atol=1e-6)
    for sigma in (5.0, 0.7, 0.05):
        x_sigma = MIX.ode_solution(x_T, 80.0, sigma)
        torch.testing.assert_close(_ode_map(x_sigma, sigma), end, rtol=0, atol=1e-6)
    sigma_hi, sigma_lo = torch.full((16,), 2.0, dtype=F64), torch.full((16,), 1.2, dtype=F64)
    x_hi = MIX.ode_solution(x_T, 80.0, 2.0)
    x_lo = O.teacher_step(MIX.denoise, x_hi, sigma_hi, sigma_lo, solver="ode")

    def f_star(x, sigma, cond=None):
        return _ode_map(x, float(torch.as_tensor(sigma).reshape(-1)[0]))

    exact = O.consistency_pair_loss(f_star, f_star, x_hi, sigma_hi, x_lo, sigma_lo)
    wrong = O.consistency_pair_loss(MIX.denoise, MIX.denoise, x_hi, sigma_hi, x_lo, sigma_lo)
    assert float(exact.max()) < 1e-10 < 1e-3 < float(wrong.mean())


def test_teacher_step_solvers_agree_and_converge():
    g = torch.Generator().manual_seed(2)
    x = 3.0 * torch.randn(12, 2, dtype=F64, generator=g)
    hi = torch.tensor([3.0, 3.0, 3.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 3.0, 1.0, 0.5], dtype=F64)
    lo = hi * 0.8
    exact = torch.stack([MIX.ode_solution(x[i:i + 1], float(hi[i]), float(lo[i]))[0] for i in range(12)])
    err = {}
    for solver in ("euler", "ddim", "heun", "dpmpp_2m", "dpm_solver_2", "ode"):
        out = O.teacher_step(MIX.denoise, x, hi, lo, solver=solver)
        err[solver] = float((out - exact).abs().max())
    assert err["euler"] == pytest.approx(err["ddim"], abs=1e-12)  # DDIM at eta 0 is Euler in the VE view
    assert err["dpmpp_2m"] == pytest.approx(err["euler"], abs=1e-12)  # a multistep method's first step is DDIM
    assert err["heun"] < err["euler"] / 5 and err["dpm_solver_2"] < err["euler"] / 5 and err["ode"] < 1e-6
    heun = O.teacher_step(MIX.denoise, x, hi, lo, solver="heun")  # batched per-sample levels ...
    grouped = O._grouped_step(MIX.denoise, x, hi, lo, None, "heun")  # ... = the sampler, stopped at sigma_next
    torch.testing.assert_close(heun, grouped, rtol=0, atol=1e-12)


def test_stochastic_solvers_are_refused():
    with pytest.raises(NoisecraftError, match="deterministic sampler.*allowed: .*heun"):
        O.teacher_step(MIX.denoise, torch.zeros(2, 2), torch.ones(2), torch.ones(2) / 2, solver="euler_a")


def test_discretisations_and_schedules():
    levels = O.karras_levels(0.002, 80.0, 18)
    assert levels[0] == 0.002 and levels[-1] == 80.0 and (levels[1:] > levels[:-1]).all()
    assert O.ict_num_scales(0, 4000) == 11 and O.ict_num_scales(3999, 4000) == 1281
    assert [O.ict_num_scales(k, 800) for k in (0, 100, 200)] == [11, 21, 41]
    p = O.ict_level_probs(levels, -1.1, 2.0)
    cdf = torch.distributions.Normal(-1.1, 2.0).cdf(levels.log())
    torch.testing.assert_close(p, (cdf[1:] - cdf[:-1]) / (cdf[-1] - cdf[0]))
    t = torch.tensor([0.01, 0.5, 5.0, 80.0], dtype=F64)
    r0, r7 = O.ect_r(t, 0), O.ect_r(t, 7)
    assert (r0 >= 0).all() and (r7 < t).all() and ((t - r7) < (t - r0) + 1e-12).all()
    torch.testing.assert_close(O.ect_r(t, 3), t * (1 - 2.0**-4 * (1 + 8 * torch.sigmoid(-t))).clamp(min=0))
    assert [O.ect_stage(k, 800, 8) for k in (0, 99, 100, 799, 5000)] == [0, 0, 1, 7, 7]


def test_distances():
    a = torch.zeros(3, 3, 32, 32, dtype=F64)
    b = a + torch.tensor([1e-6, 0.01, 1.0], dtype=F64).reshape(3, 1, 1, 1)
    assert O.pseudo_huber_c(a) == pytest.approx(0.0299, abs=1e-4)  # iCT's c = 0.03 on CIFAR-10
    d = O.distance(a, b, "pseudo_huber")
    norm = (a - b).flatten(1).norm(dim=1)
    assert float(d[2]) == pytest.approx(float(norm[2]) - 0.0299, rel=1e-3)  # ~ ||a - b|| far away
    assert float(d[0]) == pytest.approx(float(norm[0]) ** 2 / (2 * 0.0299), rel=1e-3)  # ~ ||a - b||^2 / 2c near
    torch.testing.assert_close(O.distance(a, b, "l2"), torch.tensor([1e-12, 1e-4, 1.0], dtype=F64))
    feats = O.distance(a, b, "feature", features=lambda x: x.mean((2, 3)))
    torch.testing.assert_close(feats, torch.tensor([1e-12, 1e-4, 1.0], dtype=F64))
    with pytest.raises(NoisecraftError, match="allowed: l2, pseudo_huber, feature"):
        O.distance(a, b, "lpips")


def test_consistency_sampler_on_an_exact_consistency_function():
    """One Gaussian component N(mu, s^2): f(x, sigma) = mu + sqrt(s^2 + eps^2) / sqrt(s^2 + sigma^2) (x - mu) is
    exact, so CM Alg. 1 draws N(mu, s^2 + eps^2) at 1, 2 and 4 steps."""
    mu, s, eps = torch.tensor([0.5, -0.25], dtype=F64), 0.3, 0.002

    class Exact:
        prediction = Prediction("edm", boundary_sigma=eps)

        def __call__(self, x, sigma, cond=None):
            sigma = torch.as_tensor(sigma, dtype=F64).reshape(-1, 1)
            return mu + math.sqrt(s**2 + eps**2) / torch.sqrt(s**2 + sigma**2) * (x - mu)

    f = Exact()
    for steps in (1, 2, 4):
        sigmas = get_sigmas(build_schedule("edm"), steps, "consistency")
        x = 80.0 * torch.randn(20000, 2, dtype=F64, generator=torch.Generator().manual_seed(steps))
        out = samplers.get("consistency")(f, x, sigmas, generator=torch.Generator().manual_seed(9))
        torch.testing.assert_close(out.mean(0), mu, rtol=0, atol=0.01)
        torch.testing.assert_close(out.std(0), torch.full((2,), math.sqrt(s**2 + eps**2), dtype=F64), rtol=0.02,
                                   atol=0)
    again = samplers.get("consistency")(f, x, sigmas, generator=torch.Generator().manual_seed(9))
    assert torch.equal(out, again)
    with pytest.raises(NoisecraftError, match="above the boundary sigma_min = 0.002"):
        samplers.get("consistency")(f, x[:2], torch.tensor([80.0, 0.001, 0.0], dtype=F64))
