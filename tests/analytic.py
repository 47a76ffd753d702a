"""Exact ground truths for testing the diffusion core.

GaussianMixture: data x0 ~ sum_k w_k N(mu_k, s_k^2 I) in any dimension d. In the VE view
x = x0 + sigma n the noisy marginal is sum_k w_k N(mu_k, (s_k^2 + sigma^2) I), and the ideal denoiser is

    D(x, sigma) = E[x0 | x] = sum_k p(k | x) (mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k))

with p(k | x) proportional to w_k N(x; mu_k, (s_k^2 + sigma^2) I). For one component the probability-flow
ODE dx/dsigma = (x - D) / sigma has the closed-form solution

    x(sigma) = mu + sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_0^2) (x(sigma_0) - mu).

For several components `ode_solution` integrates the ODE with a high-order adaptive solver in float64.
"""

from __future__ import annotations

import math

import torch


class GaussianMixture:
    def __init__(self, means, stds, weights=None):
        self.means = torch.as_tensor(means, dtype=torch.float64)  # (K, d)
        self.stds = torch.as_tensor(stds, dtype=torch.float64).reshape(-1)  # (K,)
        K = self.means.shape[0]
        w = torch.ones(K, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.weights = w / w.sum()

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator=None) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[k] + self.stds[k, None] * z

    def posterior(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """p(k | x) at noise level sigma, (B, K)."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1)  # (B or 1, 1)
        var = self.stds[None] ** 2 + sigma**2  # (B, K)
        sq = ((x[:, None, :] - self.means[None]) ** 2).sum(-1)  # (B, K)
        logp = self.weights.log()[None] - 0.5 * sq / var - 0.5 * self.dim * torch.log(2 * math.pi * var)
        return torch.softmax(logp, dim=1)

    def denoise(self, x: torch.Tensor, sigma, cond=None) -> torch.Tensor:
        """E[x0 | x] at noise level sigma (scalar or (B,)), computed in float64, returned in x's dtype."""
        xd = x.to(torch.float64)
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1)
        post = self.posterior(xd, sigma)  # (B, K)
        shrink = self.stds[None] ** 2 / (self.stds[None] ** 2 + sigma**2)  # (B, K)
        comp = self.means[None] + shrink[..., None] * (xd[:, None, :] - self.means[None])  # (B, K, d)
        return (post[..., None] * comp).sum(1).to(x.dtype)

    def single_gaussian_flow(self, x_start: torch.Tensor, sigma_start: float, sigma_end: float) -> torch.Tensor:
        """Closed-form probability-flow ODE solution for a one-component mixture."""
        assert self.means.shape[0] == 1, "closed form holds for one component only"
        mu, s = self.means[0], self.stds[0]
        scale = math.sqrt(s**2 + sigma_end**2) / math.sqrt(s**2 + sigma_start**2)
        return mu + scale * (x_start.to(torch.float64) - mu)

    def ode_solution(self, x_start: torch.Tensor, sigma_start: float, sigma_end: float = 0.0,
                     rtol: float = 1e-10, atol: float = 1e-10) -> torch.Tensor:
        """Probability-flow ODE from sigma_start to sigma_end, integrated in u = log(sigma) with
        scipy's DOP853 (8th order, adaptive); the last stretch below sigma = 1e-6 is exact to O(1e-12)."""
        from scipy.integrate import solve_ivp

        shape = x_start.shape
        lo = max(sigma_end, 1e-6)

        def rhs(u, y):  # dx/du = sigma dx/dsigma = x - D(x, sigma)
            x = torch.from_numpy(y).reshape(shape)
            return (x - self.denoise(x, math.exp(u))).reshape(-1).numpy()

        y0 = x_start.to(torch.float64).reshape(-1).numpy()
        sol = solve_ivp(rhs, (math.log(sigma_start), math.log(lo)), y0, method="DOP853", rtol=rtol, atol=atol)
        x = torch.from_numpy(sol.y[:, -1]).reshape(shape)
        return self.denoise(x, lo) if sigma_end == 0 else x
