"""Exact ground truths for testing the diffusion core.

GaussianMixture: data x0 ~ sum_k w_k N(mu_k, s_k^2 I) in any dimension d. In the VE view
x = x0 + sigma n the noisy marginal is sum_k w_k N(mu_k, (s_k^2 + sigma^2) I), and the ideal denoiser is

    D(x, sigma) = E[x0 | x] = sum_k p(k | x) (mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k))

with p(k | x) proportional to w_k N(x; mu_k, (s_k^2 + sigma^2) I). For one component the probability-flow
ODE dx/dsigma = (x - D) / sigma has the closed-form solution

    x(sigma) = mu + sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_0^2) (x(sigma_0) - mu).

For several components `ode_solution` integrates the ODE with a high-order adaptive solver in float64.

Classes (for conditioning and guidance): each component k belongs to a class c(k) (by default its own).
Given the class y the data is the mixture of y's components, so

    p(y | x, sigma) = sum_{k: c(k) = y} p(k | x, sigma)                        (the exact class posterior)
    E[x0 | x, y]    = sum_{k: c(k) = y} p(k | x, y) (mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k))

with p(k | x, y) = p(k | x) / p(y | x) on y's components: the exact conditional denoiser (for one component
per class, the k-th component's posterior mean). By Tweedie, D(x, sigma | y) = D(x, sigma) + sigma^2
grad_x log p(y | x, sigma) - the identity classifier guidance relies on.

Inpainting (the exact conditional law): observing the coordinates O of x0 at values y, the free coordinates F
are again a mixture with the same stds (the components are isotropic, so O and F are independent within one):

    p(x0_F | x0_O = y) = sum_k w'_k N(mu_k,F, s_k^2 I),     w'_k proportional to w_k N(y; mu_k,O, s_k^2 I).
"""

from __future__ import annotations

import math

import torch


class GaussianMixture:
    def __init__(self, means, stds, weights=None, classes=None):
        self.means = torch.as_tensor(means, dtype=torch.float64)  # (K, d)
        self.stds = torch.as_tensor(stds, dtype=torch.float64).reshape(-1)  # (K,)
        K = self.means.shape[0]
        w = torch.ones(K, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.weights = w / w.sum()
        self.classes = torch.arange(K) if classes is None else torch.as_tensor(classes, dtype=torch.long)  # (K,)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator=None) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[k] + self.stds[k, None] * z

    def posterior(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """p(k | x) at noise level sigma, (B, K)."""
        return torch.softmax(self.log_joint(x, sigma), dim=1)

    def log_joint(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """log w_k N(x; mu_k, (s_k^2 + sigma^2) I), (B, K); differentiable in x."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1)  # (B or 1, 1)
        var = self.stds[None] ** 2 + sigma**2  # (B, K)
        sq = ((x[:, None, :] - self.means[None]) ** 2).sum(-1)  # (B, K)
        return self.weights.log()[None] - 0.5 * sq / var - 0.5 * self.dim * torch.log(2 * math.pi * var)

    def observe(self, observed, values) -> GaussianMixture:
        """The exact law of the other coordinates given x0[observed] = values (module docstring): a
        GaussianMixture over the free coordinates, in their order."""
        observed = torch.as_tensor(observed, dtype=torch.long).reshape(-1)
        free = torch.tensor([i for i in range(self.dim) if i not in set(observed.tolist())], dtype=torch.long)
        y = torch.as_tensor(values, dtype=torch.float64).reshape(1, -1)  # (1, |O|)
        part = GaussianMixture(self.means[:, observed], self.stds, self.weights, self.classes)
        weights = part.posterior(y, 0.0)[0]  # w'_k: the posterior of k given x0_O = y
        return GaussianMixture(self.means[:, free], self.stds, weights, self.classes)

    # ------------------------------------------------------------------------ classes / conditioning
    @property
    def num_classes(self) -> int:
        return int(self.classes.max()) + 1

    def _class_matrix(self) -> torch.Tensor:
        """(K, C) one-hot membership of each component in its class."""
        return torch.nn.functional.one_hot(self.classes, self.num_classes).to(torch.float64)

    def class_log_posterior(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """log p(y | x, sigma) for every class y, (B, C), in closed form (logsumexp over y's components);
        differentiable in x (float64)."""
        lj = self.log_joint(x.to(torch.float64), sigma)  # (B, K)
        member = self._class_matrix().T  # (C, K)
        per_class = torch.logsumexp(lj[:, None, :] + member.log()[None], dim=2)  # (B, C)
        return per_class - torch.logsumexp(lj, dim=1, keepdim=True)

    def denoise_class(self, x: torch.Tensor, sigma, labels: torch.Tensor) -> torch.Tensor:
        """E[x0 | x, y] (the exact conditional denoiser); label num_classes means unconditional (null label)."""
        xd = x.to(torch.float64)
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1)
        lj = self.log_joint(xd, sigma)  # (B, K)
        labels = torch.as_tensor(labels).reshape(-1)
        allowed = (self.classes[None] == labels[:, None]) | (labels[:, None] == self.num_classes)  # (B, K)
        post = torch.softmax(lj.masked_fill(~allowed, -math.inf), dim=1)  # p(k | x, y)
        shrink = self.stds[None] ** 2 / (self.stds[None] ** 2 + sigma**2)  # (B, K)
        comp = self.means[None] + shrink[..., None] * (xd[:, None, :] - self.means[None])  # (B, K, d)
        return (post[..., None] * comp).sum(1).to(x.dtype)

    def conditional_denoiser(self) -> ConditionalMixtureDenoiser:
        """The exact class-conditional denoiser as denoiser(x, sigma, cond), cond = {"class_labels": (B,)}."""
        return ConditionalMixtureDenoiser(self)

    def sample_class(self, n: int, label: int, generator=None) -> torch.Tensor:
        """n draws from the data distribution of class `label`."""
        w = self.weights * (self.classes == label)
        k = torch.multinomial(w / w.sum(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[k] + self.stds[k, None] * z

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


class ConditionalMixtureDenoiser:
    """The mixture's exact conditional denoiser, callable as denoiser(x, sigma, cond=None): cond None or a
    null label gives the unconditional E[x0 | x]; it says what it accepts through `cond_spec` (a
    noisecraft CondSpec with num_classes), as the U-Net and DiT do. `calls` counts invocations and
    `batch_sizes` records each call's batch size (to check that guidance batches its evaluations)."""

    def __init__(self, mixture: GaussianMixture):
        from noisecraft.models.conditioning import CondSpec

        self.mixture = mixture
        self.cond_spec = CondSpec(num_classes=mixture.num_classes)
        self.calls, self.batch_sizes = 0, []

    def __call__(self, x: torch.Tensor, sigma, cond=None) -> torch.Tensor:
        self.calls += 1
        self.batch_sizes.append(x.shape[0])
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        labels = (cond or {}).get("class_labels")
        if labels is None:
            labels = torch.full((x.shape[0],), self.mixture.num_classes)
        return self.mixture.denoise_class(x, sigma, labels)
