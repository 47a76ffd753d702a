"""A Gaussian mixture with its exact denoiser: the test problem for benchmarking samplers and optimising
step schedules (`noisecraft schedule optimise --mixture`). The test suite keeps its own independent copy
in tests/analytic.py, so the oracle the tests trust is not the code they test.

Data x0 ~ sum_k w_k N(mu_k, s_k^2 I) in dimension d. With x = x0 + sigma n the noisy marginal is
sum_k w_k N(mu_k, (s_k^2 + sigma^2) I) and the ideal denoiser is

    D(x, sigma) = E[x0 | x] = sum_k p(k | x) (mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k)).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from noisecraft.errors import NoisecraftError


class GaussianMixture:
    def __init__(self, means, stds, weights=None):
        self.means = torch.as_tensor(means, dtype=torch.float64)  # (K, d)
        self.stds = torch.as_tensor(stds, dtype=torch.float64).reshape(-1)  # (K,)
        K = self.means.shape[0]
        w = torch.ones(K, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if self.means.ndim != 2 or self.stds.shape != (K,) or w.shape != (K,) or (self.stds <= 0).any():
            raise NoisecraftError("mixture needs means (K, d), stds (K,) > 0 and weights (K,)")
        self.weights = w / w.sum()

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator=None) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[k] + self.stds[k, None] * z

    def posterior(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """p(k | x) at noise level sigma (scalar or (B,)), (B, K)."""
        x = x.to(torch.float64).flatten(1)
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1)  # (B or 1, 1)
        var = self.stds[None] ** 2 + sigma**2  # (B, K)
        sq = (x**2).sum(1, keepdim=True) - 2 * x @ self.means.T + (self.means**2).sum(1)[None]  # (B, K)
        logp = self.weights.log()[None] - 0.5 * sq / var - 0.5 * self.dim * torch.log(2 * math.pi * var)
        return torch.softmax(logp, dim=1)

    def denoise(self, x: torch.Tensor, sigma, cond=None) -> torch.Tensor:
        """E[x0 | x], computed in float64, returned in x's dtype and shape."""
        xd = x.to(torch.float64).flatten(1)
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1)
        post = self.posterior(xd, sigma)  # (B, K)
        shrink = self.stds[None] ** 2 / (self.stds[None] ** 2 + sigma**2)  # (B, K)
        out = xd * (post * shrink).sum(1, keepdim=True) + (post * (1 - shrink)) @ self.means  # (B, d)
        return out.reshape(x.shape).to(x.dtype)

    __call__ = denoise

    def component(self, x0: torch.Tensor) -> torch.Tensor:
        """The most likely component of clean samples x0, (B,)."""
        return self.posterior(x0, 0.0).argmax(1)

    def to_json(self) -> dict:
        return {"means": self.means.tolist(), "stds": self.stds.tolist(), "weights": self.weights.tolist()}


def benchmark_mixture(dim: int = 64, components: int = 8, seed: int = 0) -> GaussianMixture:
    """The benchmark problem: means uniform in [-1, 1]^d (an image-like range), stds in [0.05, 0.3],
    weights in [0.5, 1.5] (normalised), all drawn from `seed`."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(components, dim, generator=g, dtype=torch.float64) * 2 - 1
    stds = 0.05 + 0.25 * torch.rand(components, generator=g, dtype=torch.float64)
    weights = 0.5 + torch.rand(components, generator=g, dtype=torch.float64)
    return GaussianMixture(means, stds, weights)


def load_mixture(spec: str) -> GaussianMixture:
    """A mixture from a spec: "bench:D:K[:SEED]" (`benchmark_mixture`) or a JSON file with means, stds,
    weights."""
    if spec.startswith("bench"):
        parts = spec.split(":")[1:]
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            nums = None
        if nums is None or len(nums) > 3:
            raise NoisecraftError(f"mixture spec {spec!r}: expected bench[:DIM[:COMPONENTS[:SEED]]]")
        return benchmark_mixture(*nums)
    path = Path(spec)
    if not path.is_file():
        raise NoisecraftError(f"mixture {spec!r} is neither bench[:DIM[:K[:SEED]]] nor a JSON file")
    try:
        data = json.loads(path.read_text())
        return GaussianMixture(data["means"], data["stds"], data.get("weights"))
    except (ValueError, KeyError, TypeError) as e:
        raise NoisecraftError(f"mixture file {spec}: needs keys means, stds[, weights] ({e})") from e
