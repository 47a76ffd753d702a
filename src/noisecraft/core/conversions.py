"""The single place where the variance-preserving (VP) and variance-exploding (VE) views meet.

Notation (Karras et al. 2022, Sec. 2 and Table 1):

    VE view:  x      = x0 + sigma * n                        (what samplers and denoisers use)
    VP view:  x_t    = alpha_t * x0 + sigma_t * n,  alpha_t^2 + sigma_t^2 = 1
    with      alpha_t = 1 / sqrt(1 + sigma^2),  sigma_t = sigma * alpha_t,  x_t = alpha_t * x
    and       alphas_cumprod = alpha_t^2 = 1 / (1 + sigma^2)   (Ho et al. 2020, Eq. 4)
"""

from __future__ import annotations

import torch


def alpha_sigma_vp(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VE noise level sigma -> (alpha_t, sigma_t) of the VP process with the same SNR."""
    alpha = torch.rsqrt(1 + sigma**2)
    return alpha, sigma * alpha


def sigma_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """sigma = sqrt((1 - abar) / abar): the VE noise level of a discrete VP step."""
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt()


def vp_to_ve(x_t: torch.Tensor, sigma) -> torch.Tensor:
    """x_t (VP) -> x (VE): x = x_t / alpha_t = x_t * sqrt(1 + sigma^2)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    return x_t * (1 + sigma**2).sqrt().to(x_t.dtype)


def ve_to_vp(x: torch.Tensor, sigma) -> torch.Tensor:
    """x (VE) -> x_t (VP): x_t = alpha_t * x."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    return x * torch.rsqrt(1 + sigma**2).to(x.dtype)
