"""Deterministic samplers converge to the exact probability-flow ODE solution at their theoretical order.

Global order: from the same noise at sigma_max = 80, with n and 2n steps uniform in log sigma down to
sigma_min = 0.1 (then 0), the error of x at sigma_min (read through the callback, so the last step to 0
does not mask the order) falls by 2^order. The truth is the closed form for one Gaussian component and
scipy's DOP853 at rtol 1e-12 for a three-component mixture (tests/analytic.py).

Local order: one step from exact history (the exact trajectory and exact denoiser values at the previous
levels) has error O(h^(order + 1)); halving h (and the previous gaps) divides it by 2^(order + 1). This
checks each multistep formula without its lower-order warm-up steps.
"""

import math

import pytest
import torch

from analytic import GaussianMixture
from noisecraft.samplers import get, get_step
from noisecraft.samplers._common import History
from noisecraft.schedules.steps import exponential_sigmas

SIGMA_MAX, SIGMA_MIN = 80.0, 0.1
ONE = GaussianMixture([[0.3, -0.5, 0.8, 0.1]], [0.5])
MIX = GaussianMixture([[1.0, 0.5], [-1.0, 0.0], [0.2, -1.2]], [0.4, 0.3, 0.5], [1, 2, 1.5])


@pytest.fixture(scope="module")
def problems():
    z1 = torch.randn(16, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    z2 = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    return {
        "gaussian": (ONE, SIGMA_MAX * z1, ONE.single_gaussian_flow(SIGMA_MAX * z1, SIGMA_MAX, SIGMA_MIN)),
        "mixture": (MIX, SIGMA_MAX * z2, MIX.ode_solution(SIGMA_MAX * z2, SIGMA_MAX, SIGMA_MIN, rtol=1e-12,
                                                            atol=1e-12)),
    }


def error_at_sigma_min(name, problem, n, **options):
    gm, x_T, ref = problem
    seen = {}
    get(name)(gm.denoise, x_T, exponential_sigmas(SIGMA_MIN, SIGMA_MAX, n + 1), **options,
              callback=lambda info: seen.__setitem__(round(info["sigma"], 9), info["x"]))
    return (seen[round(SIGMA_MIN, 9)] - ref).pow(2).mean().sqrt().item()


# (sampler, options, theoretical global order, n): n and 2n steps are in the asymptotic range.
GLOBAL = [
    ("euler", {}, 1, 32), ("ddim", {}, 1, 32), ("heun", {}, 2, 16), ("dpm_solver_2", {}, 2, 16),
    ("dpm_solver_3", {}, 3, 16), ("dpmpp_2s", {}, 2, 32), ("dpmpp_2m", {}, 2, 32),
    ("dpmpp_2m", {"solver_type": "heun"}, 2, 32), ("dpmpp_3m", {}, 3, 64), ("unipc", {"order": 1}, 2, 32),
    ("unipc", {"order": 2}, 3, 32), ("unipc", {"order": 2, "variant": "bh1"}, 3, 32), ("lms", {}, 4, 64),
    ("deis", {}, 3, 32), ("expint", {"order": 1}, 2, 32),
]


@pytest.mark.parametrize("name,options,order,n", GLOBAL, ids=lambda v: str(v))
@pytest.mark.parametrize("case", ["gaussian", "mixture"])
def test_global_order(problems, name, options, order, n, case):
    e1 = error_at_sigma_min(name, problems[case], n, **options)
    e2 = error_at_sigma_min(name, problems[case], 2 * n, **options)
    observed = math.log2(e1 / e2)
    if name == "deis" and case == "gaussian":  # eps is nearly polynomial in log sigma here: superconvergence
        assert observed >= order - 0.3
    else:
        assert abs(observed - order) <= 0.35, f"{name} {options}: observed order {observed:.2f}, expected {order}"


@pytest.mark.parametrize("order,expected", [(2, 3), (3, 3)])
def test_expint_global_order(problems, order, expected):
    """expint-p (predictor p nodes, corrector p + 1) is order p + 1; for p = 3 the warm-up caps it at 3."""
    e = [error_at_sigma_min("expint", problems["mixture"], n, order=order) for n in (32, 64)]
    assert math.log2(e[0] / e[1]) >= expected - 0.3


def test_expint_is_exact_for_gaussian_data():
    """With sigma_data = the data std, D is linear in v = 1 / sqrt(sigma^2 + sigma_data^2) along the exact
    trajectory: one step from two exact nodes reaches sigma = 0 exactly, with no step-size restriction."""
    x0 = ONE.single_gaussian_flow(SIGMA_MAX * torch.randn(8, 4, dtype=torch.float64), SIGMA_MAX, 3.0)
    x1 = ONE.single_gaussian_flow(x0, 3.0, 0.7)
    state = History((3.0,), (ONE.denoise(x0, 3.0),), {"x": x0})
    for target in (0.2, 0.0):
        out, _ = get_step("expint")(x1, 0.7, target, ONE.denoise(x1, 0.7), state, order=2, sigma_data=0.5,
                                    corrector=False)
        torch.testing.assert_close(out, ONE.single_gaussian_flow(x1, 0.7, target), rtol=0, atol=1e-12)


def test_unipc3_global_order_is_at_least_3(problems):
    """UniPC-3 is 4th order per step (test_local_order) but its warm-up (UniC-1, 2nd order) caps the global
    order at 3 asymptotically; from sigma_max = 80 the warm-up error is small and the observed order lies
    between 3 and 4."""
    e = [error_at_sigma_min("unipc", problems["mixture"], n, order=3) for n in (16, 32)]
    assert 3.0 <= math.log2(e[0] / e[1]) <= 4.5


def test_legacy_3m_is_second_order_ours_third(problems):
    """k-diffusion's / diffusers' 3M term (-phi_3 D2, half the third-order coefficient) converges at order 2."""
    legacy = [error_at_sigma_min("dpmpp_3m", problems["mixture"], n, legacy_3m=True) for n in (64, 128)]
    ours = [error_at_sigma_min("dpmpp_3m", problems["mixture"], n) for n in (64, 128)]
    assert abs(math.log2(legacy[0] / legacy[1]) - 2) <= 0.25
    assert math.log2(ours[0] / ours[1]) >= 2.8


def test_adaptive_ode_meets_its_tolerance(problems):
    gm, x_T, ref = problems["mixture"]
    stats = {}
    seen = {}
    get("ode")(gm.denoise, x_T, torch.tensor([SIGMA_MAX, SIGMA_MIN, 0.0], dtype=torch.float64), rtol=1e-9, atol=1e-9,
               stats=stats, callback=lambda info: seen.__setitem__(info["sigma"], info["x"]))
    assert (seen[SIGMA_MIN] - ref).abs().max() < 1e-7
    assert stats["nfe"] > 0 and stats["steps"] > 0


# ----------------------------------------------------------------------------------------------- local


def exact(x_start, s0, s):
    return x_start if s == s0 else MIX.ode_solution(x_start, s0, s, rtol=1e-13, atol=1e-13)


@pytest.fixture(scope="module")
def start():
    z = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    return MIX.ode_solution(20 * z, 20.0, 2.0, rtol=1e-13, atol=1e-13)  # x at sigma = 2 on an exact path


def one_step(start, name, k, h, corrector_check=False, **options):
    """Local error of one step of `name` from sigma = 2 to 2 e^-h with k exact previous points h apart."""
    levels = [2.0 * math.exp((k - 1 - i) * h) for i in range(k)]  # oldest first, ending at sigma = 2
    xs = [exact(start, 2.0, s) for s in levels]
    outputs = [MIX.denoise(x, s) for x, s in zip(xs, levels)]
    step, t = get_step(name), 2.0 * math.exp(-h)
    if name in ("lms", "deis"):
        outputs = [(x - D) / s for x, D, s in zip(xs, outputs, levels)]
        prev = History(tuple(reversed(levels[:-1])), tuple(reversed(outputs[:-1])),
                       {"D": tuple(reversed([MIX.denoise(x, s) for x, s in zip(xs[:-1], levels[:-1])]))})
    else:
        prev = History(tuple(reversed(levels[:-1])), tuple(reversed(outputs[:-1])), None) if k > 1 else None
    D0 = MIX.denoise(xs[-1], 2.0)
    first = {**options, "corrector": False} if name == "unipc" else options  # exact history: nothing to correct
    x_t, state = step(xs[-1], 2.0, t, D0, prev, **first)
    if corrector_check:  # UniC: correct x_t with the model at x_t; the corrected sample is state.extra["x"]
        _, state = step(x_t, t, t * math.exp(-h), MIX.denoise(x_t, t), state, **options)
        x_t = state.extra["x"]
    return (x_t - exact(start, 2.0, t)).abs().max().item()


LOCAL = [  # (step name, options, previous points, local order = global order + 1)
    ("dpmpp_2m", {"order": 1}, 1, 2), ("dpmpp_2m", {}, 2, 3), ("dpmpp_3m", {}, 3, 4),
    ("dpmpp_3m", {"legacy_3m": True}, 3, 3), ("lms", {"order": 4}, 4, 5), ("deis", {"order": 3}, 3, 4),
    ("unipc", {"order": 1}, 1, 2), ("unipc", {"order": 2}, 2, 3), ("unipc", {"order": 3}, 3, 4),
]


@pytest.mark.parametrize("name,options,k,order", LOCAL, ids=lambda v: str(v))
def test_local_order(start, name, options, k, order):
    e = [one_step(start, name, k, h, **options) for h in (0.1, 0.05, 0.025)]
    observed = math.log2(e[1] / e[2])
    assert abs(observed - order) <= 0.35, f"{name} {options}: local order {observed:.2f}, expected {order}"


@pytest.mark.parametrize("p", [1, 2, 3])
def test_unic_raises_the_local_order(start, p):
    """UniC-p after UniP-p: local error O(h^(p + 2)) (Zhao et al. 2023, Theorem 3.1)."""
    e = [one_step(start, "unipc", p, h, corrector_check=True, order=p, predictor_order=p) for h in (0.1, 0.05, 0.025)]
    assert math.log2(e[1] / e[2]) >= p + 2 - 0.4


def test_extrapolated_last_step_is_higher_order(start):
    """From exact points at sigma and 2 sigma, the last step to 0: "denoise" errs O(sigma^2), "extrapolate"
    (linear in sigma^2) O(sigma^4)."""
    x1 = MIX.ode_solution(start, 2.0, 0.2, rtol=1e-13, atol=1e-13)
    truth = MIX.ode_solution(x1, 0.2, 0.0, rtol=1e-13, atol=1e-13)
    errs = {"denoise": [], "extrapolate": []}
    for s in (0.04, 0.02, 0.01):
        x_prev, x = exact(x1, 0.2, 2 * s), exact(x1, 0.2, s)
        state = History((2 * s,), (MIX.denoise(x_prev, 2 * s),), None)
        for final in errs:
            out, _ = get_step("dpmpp_2m")(x, s, 0.0, MIX.denoise(x, s), state, final=final)
            errs[final].append((out - truth).abs().max().item())
    assert abs(math.log2(errs["denoise"][1] / errs["denoise"][2]) - 2) <= 0.3
    assert math.log2(errs["extrapolate"][1] / errs["extrapolate"][2]) >= 3.6
