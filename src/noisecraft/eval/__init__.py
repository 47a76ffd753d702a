"""Evaluation: "how good is this model?" in standard numbers, offline, at any time.

Metrics on feature arrays (N, D), numpy float64 (`noisecraft.eval.metrics`):

    frechet_distance(mu1, sigma1, mu2, sigma2)  FD (Heusel et al. 2017), stable eigen-based square root
    fd(x, y)                                    FD of two feature sets
    fd_infinity(x, mu, sigma)                   FD extrapolated to n -> infinity (Chong & Forsyth 2020)
    kid(x, y)                                   KID, unbiased MMD^2 with the cubic kernel, subsets (mean, std)
    precision_recall(x, y, k=3)                 Kynkaanniemi et al. 2019
    inception_score(logits)                     IS of any classifier (Salimans et al. 2016)

Feature extractors (`noisecraft.eval.features`): get_extractor("mnist" | "effnet" | "inception") ->
extractor(images (N, C, H, W), any size, [-1, 1] or uint8) -> (N, D) float64.

Whole evaluations: evaluate(images, reference="mnist", features=..., metrics=("fd", "kid", "pr", "is"));
reference statistics cached by `load_reference`; `memorization_report` / `save_neighbours_png` for near-copies;
(metrics during training: `noisecraft.training.evaluation`); `load_images` reads directories, .npy and grid PNGs.

Importing this package loads numpy only; torch and the networks load on first use.
"""

from importlib import import_module

from noisecraft.eval.common import EvalError, RankWarning, WeightsError
from noisecraft.eval.metrics import (
    fd,
    fd_infinity,
    frechet_distance,
    gaussian_stats,
    inception_score,
    kid,
    precision_recall,
)

_LAZY = {
    "METRICS": "evaluation", "evaluate": "evaluation", "parse_metrics": "evaluation", "score": "evaluation",
    "FeatureExtractor": "features", "available_features": "features", "get_extractor": "features",
    "prepare_images": "features",
    "Reference": "reference", "load_reference": "reference", "cache_dir": "reference",
    "load_images": "image_io",
    "memorization_report": "memorization", "save_neighbours_png": "memorization",
}

__all__ = ["EvalError", "RankWarning", "WeightsError", "fd", "fd_infinity", "frechet_distance", "gaussian_stats",
           "inception_score", "kid", "precision_recall", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(f"noisecraft.eval.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'noisecraft.eval' has no attribute {name!r}")
