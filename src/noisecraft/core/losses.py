"""Denoising losses over the shared denoiser interface.

For x = x0 + sigma n and a network F with output scalings (c_skip, c_out), the x0-space loss
lambda(sigma) ||D(x, sigma) - x0||^2 equals lambda(sigma) c_out^2 ||F - target||^2 with
target = (x0 - c_skip x) / c_out (`Prediction.target`). The weightings below are given in the network
output space:

- "simple": unit weight, i.e. each prediction type's native MSE. With the eps prediction on a discrete
  schedule and uniform t this is L_simple of Ho et al. 2020 (Eq. 14); with "v" the v-loss of Salimans &
  Ho 2022 (Sec. 4); with "x0" the x0 MSE; with "flow" the conditional flow-matching loss (Lipman et
  al. 2023, Eq. 23; Esser et al. 2024, Eq. 3).
- "min_snr": min(SNR, gamma) in x0 space (Hang et al. 2023, Eq. 9), SNR = 1 / sigma^2; i.e.
  min(SNR, gamma) / SNR for eps and min(SNR, gamma) / (SNR + 1) for v.
- "edm": lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (Karras et al. 2022, Table 1); unit
  weight for the edm prediction.

The variational-bound term for learned variances (Nichol & Dhariwal 2021) is not implemented yet.
"""

from __future__ import annotations

import torch

from noisecraft.core.denoiser import Denoiser
from noisecraft.errors import unknown_name

WEIGHTINGS = ("simple", "min_snr", "edm")


def output_weight(
    weighting: str, sigma: torch.Tensor, c_out: torch.Tensor, *, gamma: float = 5.0, sigma_data: float = 0.5
) -> torch.Tensor:
    """Per-sample weight on ||F - target||^2 (float64, shape of sigma)."""
    if weighting == "simple":
        return torch.ones_like(sigma)
    if weighting == "min_snr":
        return torch.clamp(sigma**-2, max=gamma) * c_out**2
    if weighting == "edm":
        return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2 * c_out**2
    raise unknown_name("loss weighting", weighting, WEIGHTINGS)


def denoising_loss(
    denoiser: Denoiser,
    x0: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor,
    cond=None,
    *,
    weighting: str = "simple",
    gamma: float = 5.0,
) -> torch.Tensor:
    """Per-sample weighted loss (B,) at noise levels sigma (B,) with the given unit noise."""
    sigma = sigma.to(device=x0.device, dtype=torch.float64)
    sigma_x = sigma.reshape(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)  # (B, 1, ..., 1), broadcasts against x0
    x = x0 + sigma_x * noise  # (B, ...) VE noisy sample
    F = denoiser.raw(x, sigma, cond).float()
    target = denoiser.prediction.target(x0, noise, sigma_x)
    _, c_out = denoiser.prediction.scalings(sigma)
    w = output_weight(weighting, sigma, c_out, gamma=gamma, sigma_data=denoiser.prediction.sigma_data)
    per_sample = _mean_per_sample((F - target).square(), cond)
    return w.to(per_sample.dtype) * per_sample


def _mean_per_sample(sq: torch.Tensor, cond) -> torch.Tensor:
    """The mean of sq (B, ...) per sample; with cond["loss_mask"] (broadcastable to sq, 1 = counted) the mean over
    the counted elements only (a molecule run's real atoms, `noisecraft.conditions.atoms`)."""
    mask = cond.get("loss_mask") if isinstance(cond, dict) else None
    if mask is None:
        return sq.flatten(1).mean(1)
    mask = mask.to(sq.dtype).expand_as(sq)
    return (sq * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp(min=1)
