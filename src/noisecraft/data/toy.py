"""2-D toy point distributions for teaching and for tests.

Each `make_*` draws `n` points from a seeded `numpy.random.Generator` (passed in; no global random
state) and returns float64 arrays. Scales (all centred at the origin, roughly unit size):

=============  ================================================================================
8gaussians     mixture of 8 equal-weight isotropic Gaussians, std EIGHT_GAUSSIANS_STD = 0.15,
               centres r (cos(k pi/4), sin(k pi/4)), k = 0..7, r = sqrt(2 (1 - 0.15^2)) ~ 1.398,
               chosen so each coordinate has mean 0 and variance exactly 1. Label = k.
moons          two interleaved half circles of radius 1 (the classic "two moons"), shifted by
               (-0.5, -0.25) so their mean is 0: x in [-1.5, 1.5], y in [-0.75, 0.75], plus
               Gaussian noise (std 0.05). Upper moon: centre (-0.5, -0.25), angles [0, pi], label
               0; lower moon: centre (0.5, 0.25), angles [pi, 2 pi], label 1.
swissroll      spiral r (cos t, sin t) with t = 1.5 pi (1 + 2u), u ~ U(0, 1), r = t / (3 pi), so
               the radius is uniform on [0.5, 1.5] (mean 1) over 1.5 turns; plus Gaussian noise
               (std 0.05). Unlabelled.
checkerboard   uniform on the 8 unit squares of [-2, 2]^2 whose corner (floor x, floor y) has an
               even sum; each coordinate is uniform on [-2, 2] (variance 4/3). Unlabelled.
=============  ================================================================================
"""

from __future__ import annotations

import math

import numpy as np
import torch

from noisecraft.data.base import ImageDataset, split_indices
from noisecraft.errors import DataError

DEFAULT_POINTS = 10_000
EIGHT_GAUSSIANS_STD = 0.15
EIGHT_GAUSSIANS_RADIUS = math.sqrt(2.0 * (1.0 - EIGHT_GAUSSIANS_STD**2))
TOY_NOISE = 0.05
MOONS_SHIFT = (0.5, 0.25)  # mean of the noise-free two-moons points, subtracted


def eight_gaussians_centres() -> np.ndarray:
    """The 8 mixture centres, (8, 2), centre k at angle k pi / 4."""
    angle = np.arange(8) * (np.pi / 4)
    return EIGHT_GAUSSIANS_RADIUS * np.stack([np.cos(angle), np.sin(angle)], axis=1)


def make_8gaussians(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(points (n, 2), component ids (n,)) from the 8-Gaussian mixture."""
    k = rng.integers(0, 8, size=n)
    return eight_gaussians_centres()[k] + EIGHT_GAUSSIANS_STD * rng.standard_normal((n, 2)), k


def make_moons(n: int, rng: np.random.Generator, noise: float = TOY_NOISE) -> tuple[np.ndarray, np.ndarray]:
    """(points (n, 2), moon ids (n,)): 0 = upper moon, 1 = lower moon."""
    moon = rng.integers(0, 2, size=n)
    t = rng.uniform(0.0, np.pi, size=n)
    upper = np.stack([np.cos(t), np.sin(t)], axis=1)
    lower = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=1)
    x = np.where(moon[:, None] == 0, upper, lower) - np.asarray(MOONS_SHIFT)
    return x + noise * rng.standard_normal((n, 2)), moon


def make_swissroll(n: int, rng: np.random.Generator, noise: float = TOY_NOISE) -> np.ndarray:
    """Points (n, 2) on the 2-D Swiss roll spiral, radius t / (3 pi) at angle t."""
    t = 1.5 * np.pi * (1.0 + 2.0 * rng.uniform(size=n))
    r = t / (3.0 * np.pi)
    return r[:, None] * np.stack([np.cos(t), np.sin(t)], axis=1) + noise * rng.standard_normal((n, 2))


def make_checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    """Points (n, 2) uniform on the dark squares of a 4x4 checkerboard on [-2, 2]^2."""
    x1 = rng.uniform(-2.0, 2.0, size=n)
    x2 = rng.uniform(0.0, 1.0, size=n) - 2.0 * rng.integers(0, 2, size=n) + np.mod(np.floor(x1), 2)
    return np.stack([x1, x2], axis=1)


def _toy_rng(seed: int, split: str) -> np.random.Generator:
    """'all' and 'train' share one stream; 'test' is an independent stream for the same seed."""
    split_indices(None, 0, split)  # validates the split name
    return np.random.default_rng([seed, 1] if split == "test" else seed)


def _toy_loader(name: str, make, class_names: tuple[str, ...] | None):
    def load(*, root=None, resolution=None, channels=None, split="all", limit=None, seed=0) -> ImageDataset:
        for option, value in (("root", root), ("resolution", resolution), ("channels", channels)):
            if value is not None:
                raise DataError(f"dataset {name!r} is 2-D point data; {option} applies only to image "
                                f"datasets, got {option}={value!r}")
        out = make(DEFAULT_POINTS if limit is None else limit, _toy_rng(seed, split))
        points, labels = out if isinstance(out, tuple) else (out, None)
        labels = None if labels is None else torch.from_numpy(labels.astype(np.int64))
        return ImageDataset(name, torch.from_numpy(points.astype(np.float32)), labels, class_names)

    load.__doc__ = f"Load {name!r}: `limit` points (default {DEFAULT_POINTS}); see noisecraft.data.toy."
    return load


TOY_DATASETS = {
    "8gaussians": _toy_loader("8gaussians", make_8gaussians, tuple(str(k) for k in range(8))),
    "checkerboard": _toy_loader("checkerboard", make_checkerboard, None),
    "moons": _toy_loader("moons", make_moons, ("upper", "lower")),
    "swissroll": _toy_loader("swissroll", make_swissroll, None),
}
