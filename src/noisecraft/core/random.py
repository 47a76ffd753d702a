"""Randomness is passed in (DESIGN habit 7): one generator, or one generator per sample."""

from __future__ import annotations

from collections.abc import Sequence

import torch

Generator = torch.Generator | Sequence[torch.Generator] | None


def randn_like(x: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """Unit Gaussian noise shaped like `x`.

    Drawn in float32 on the generator's device and then cast, so the same seed gives the same
    noise whatever the working dtype (float32 or float64). A list of generators draws row i of the
    batch from generator i: image i is then the same whatever the batch size.
    """
    if isinstance(generator, Sequence):
        if len(generator) != x.shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {x.shape[0]}")
        rows = [_draw(x.shape[1:], g, x.device) for g in generator]
        return torch.stack(rows).to(x.dtype)
    return _draw(x.shape, generator, x.device).to(x.dtype)


def _draw(shape, generator, device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, dtype=torch.float32, device=gen_device).to(device)


def make_generators(seed: int, n: int, device="cpu") -> list[torch.Generator]:
    """Per-sample generators seeded seed, seed+1, ..., seed+n-1."""
    return [torch.Generator(device).manual_seed(seed + i) for i in range(n)]
