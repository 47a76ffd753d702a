"""The denoiser protocol (DESIGN.md): D(x, sigma, cond) -> x0_hat in the VE view x = x0 + sigma n.

`Denoiser` wraps a network F with the preconditioning of Karras et al. 2022 (Eq. 7):

    D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma), cond)

with (c_skip, c_out) from the `Prediction` and (c_in, c_noise) from the training `Schedule`.
The network may run in any dtype; the scalings are computed in float64 and D is returned in x's dtype
(sampler arithmetic stays in float32/float64, DESIGN habit 8).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from noisecraft.core.prediction import Prediction
from noisecraft.errors import NoisecraftError

DenoiserFn = Callable[..., torch.Tensor]  # (x, sigma, cond=None) -> x0_hat


def expand_sigma(sigma, x: torch.Tensor) -> torch.Tensor:
    """sigma as a float64 (B,) tensor for a batch x of B samples (accepts a float, 0-d or (B,) tensor)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
    if sigma.ndim == 0:
        return sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise NoisecraftError(f"sigma must be a scalar or shape ({x.shape[0]},), got {tuple(sigma.shape)}")
    return sigma


def _bcast(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) to broadcast against x."""
    return c.reshape(-1, *([1] * (x.ndim - 1)))


class Denoiser(nn.Module):
    """A network plus its preconditioning, called as denoiser(x, sigma, cond=None) -> x0_hat."""

    def __init__(self, net: nn.Module, schedule, prediction: Prediction):
        super().__init__()
        self.net = net
        self.schedule = schedule
        self.prediction = prediction

    def scalings(self, sigma: torch.Tensor):
        """(c_skip, c_out, c_in, c_noise) at float64 noise levels sigma (B,)."""
        c_skip, c_out = self.prediction.scalings(sigma)
        return c_skip, c_out, self.schedule.c_in(sigma), self.schedule.c_noise(sigma)

    def net_dtype(self) -> torch.dtype:
        p = next(self.net.parameters(), None)
        return p.dtype if p is not None else torch.float32

    def raw(self, x: torch.Tensor, sigma: torch.Tensor, cond=None) -> torch.Tensor:
        """F(c_in x, c_noise, cond): the network output, in the network's dtype."""
        _, _, c_in, c_noise = self.scalings(sigma)
        dtype = self.net_dtype()
        x_in = (_bcast(c_in, x) * x).to(dtype)
        return self.net(x_in, c_noise.to(dtype), cond)

    def forward(self, x: torch.Tensor, sigma, cond=None) -> torch.Tensor:
        sigma = expand_sigma(sigma, x)
        c_skip, c_out, _, _ = self.scalings(sigma)
        F = self.raw(x, sigma, cond)
        out = _bcast(c_skip, x) * x + _bcast(c_out, x) * F.to(torch.float64)
        return out.to(x.dtype)


def clamp_denoised(denoiser: DenoiserFn, lo: float = -1.0, hi: float = 1.0) -> DenoiserFn:
    """Wrap a denoiser so its x0 estimate is clipped to [lo, hi] (diffusers' `clip_sample`)."""

    def clamped(x, sigma, cond=None):
        return denoiser(x, sigma, cond).clamp(lo, hi)

    return clamped
