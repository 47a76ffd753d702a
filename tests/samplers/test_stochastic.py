"""Stochastic samplers draw from the target: on a 2-D Gaussian mixture with the exact denoiser, the samples'
energy distance to a set of true samples stays within the sampling-noise floor (mean + 4 std of the same
distance for fresh sets of true samples; the bound's power is checked on a deliberately wrong sampler),
and the mean and covariance match."""

import pytest
import torch

from analytic import GaussianMixture
from noisecraft.samplers import get
from noisecraft.schedules.steps import karras_sigmas

MIX = GaussianMixture([[1.0, 0.5], [-1.0, 0.0], [0.2, -1.2]], [0.4, 0.3, 0.5], [1, 2, 1.5])
N = 2000


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """2 E|A - B| - E|A - A'| - E|B - B'| (Szekely & Rizzo), V-statistic."""
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


@pytest.fixture(scope="module")
def floor():
    """Mean + 4 std of the energy distance between N fresh true samples and the fixed true set (10 draws)."""
    g, truth = torch.Generator().manual_seed(100), MIX.sample(N, torch.Generator().manual_seed(8))
    d = torch.tensor([energy_distance(MIX.sample(N, g), truth) for _ in range(10)])
    return float(d.mean() + 4 * d.std())


CASES = [
    ("ddpm", {}, 120), ("euler_a", {}, 120), ("ddim", {"eta": 0.5}, 120), ("dpmpp_2s_a", {}, 100),
    ("dpmpp_2m_sde", {}, 120), ("dpmpp_3m_sde", {}, 120), ("euler_maruyama", {}, 240),
    ("pc", {"snr": 0.16, "corrector_steps": 1}, 120), ("pc", {"predictor": "ancestral", "snr": 0.1}, 120),
    ("heun", {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003}, 100),
    ("dpmpp_2m", {"eta": 0.5}, 120),
]


@pytest.mark.parametrize("name,options,steps", CASES, ids=lambda v: str(v))
def test_samples_match_the_mixture(floor, name, options, steps):
    g = torch.Generator().manual_seed(7)
    x_T = 80.0 * torch.randn(N, 2, generator=g, dtype=torch.float64)
    x = get(name)(MIX.denoise, x_T, karras_sigmas(0.002, 80.0, steps), generator=g, **options)
    truth = MIX.sample(N, torch.Generator().manual_seed(8))
    ed = energy_distance(x, truth)
    print(f"{name} {options}: energy distance {ed:.2e}, bound {floor:.2e}")
    assert ed <= floor
    se = truth.std(0) / N**0.5
    assert ((x.mean(0) - truth.mean(0)).abs() <= 5 * 2**0.5 * se).all()
    assert torch.allclose(torch.cov(x.T), torch.cov(truth.T), atol=0.08)


def test_floor_detects_a_wrong_distribution(floor):
    """The bound has power: DDIM with too few steps (deterministic, 3 steps) is far from the mixture."""
    g = torch.Generator().manual_seed(7)
    x = get("ddim")(MIX.denoise, 80.0 * torch.randn(N, 2, generator=g, dtype=torch.float64),
                    karras_sigmas(0.002, 80.0, 3))
    assert energy_distance(x, MIX.sample(N, torch.Generator().manual_seed(8))) > 10 * floor
