"""Small tensor helpers shared by networks and encoders."""

from __future__ import annotations

import torch


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of tokens (B, T, D) over the positions where mask (B, T) is True -> (B, D) (0 for a row with none)."""
    m = mask.unsqueeze(-1)  # (B, T, 1)
    return torch.where(m, tokens, 0.0).sum(1) / m.sum(1).clamp(min=1).to(tokens.dtype)
