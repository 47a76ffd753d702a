"""Error types and input checks shared by `noisecraft.eval` (numpy only; no torch at import)."""

from __future__ import annotations

import warnings

import numpy as np

from noisecraft.errors import NoisecraftError


class EvalError(NoisecraftError):
    """Bad input to an evaluation: wrong shapes, too few samples, an unknown metric or feature name."""


class WeightsError(EvalError):
    """A feature network's weights file is missing, unreadable, or does not fit the network."""


class RankWarning(UserWarning):
    """Fewer samples than feature dimensions: the covariance is rank-deficient and FD is biased."""


def as_features(x, what: str = "features") -> np.ndarray:
    """(N, D) array-like or torch tensor -> float64 numpy array; EvalError unless 2-D, non-empty, finite."""
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise EvalError(f"{what} must be a 2-D array (N, D) with N, D >= 1, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise EvalError(f"{what} contain {int((~np.isfinite(x)).sum())} non-finite value(s) (NaN or inf)")
    return x


def check_pair(a: np.ndarray, b: np.ndarray) -> None:
    """Raise EvalError unless both feature sets have the same dimension D."""
    if a.shape[1] != b.shape[1]:
        raise EvalError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}; "
                        f"compute both sets with the same feature extractor")


def warn_rank(n: int, d: int, what: str) -> None:
    """Warn (RankWarning) when n samples cannot give a full-rank (d, d) covariance (n <= d)."""
    if n <= d:
        warnings.warn(f"{what}: {n} samples for {d} feature dimensions: the covariance has rank <= {n - 1} < {d}, "
                      f"so the Frechet distance is strongly biased upward; use more than {d} samples",
                      RankWarning, stacklevel=3)
