"""The package's Gaussian mixture (used by benchmarks/samplers.py and `noisecraft schedule optimise`) is a
separate implementation from the test oracle in tests/analytic.py; the two must agree, or the benchmark's
figures would rest on an untested denoiser."""

import torch

from analytic import GaussianMixture as Oracle
from noisecraft.samplers.mixture import benchmark_mixture


def test_package_mixture_equals_the_test_oracle():
    pkg = benchmark_mixture(dim=16, components=5, seed=3)
    oracle = Oracle(pkg.means, pkg.stds, pkg.weights)
    g = torch.Generator().manual_seed(0)
    x0 = oracle.sample(256, g)
    for sigma in (1e-3, 0.1, 0.7, 5.0, 80.0):
        x = x0 + sigma * torch.randn(x0.shape, generator=g, dtype=torch.float64)
        torch.testing.assert_close(pkg.posterior(x, sigma), oracle.posterior(x, sigma), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(pkg.denoise(x, sigma), oracle.denoise(x, sigma), rtol=1e-9, atol=1e-12)
    sig = torch.rand(256, generator=g, dtype=torch.float64) * 3 + 0.01  # per-sample noise levels
    x = x0 + sig[:, None] * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(pkg.denoise(x, sig), oracle.denoise(x, sig), rtol=1e-9, atol=1e-12)
