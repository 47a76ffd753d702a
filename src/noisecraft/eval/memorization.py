"""Memorisation check: the nearest training images of generated samples, and the fraction of near-copies.

Rule (Yoon et al. 2023, "Diffusion Probabilistic Models Generalize when They Fail to Memorize", Sec. 3;
Gu et al. 2023, "On Memorization in Diffusion Models", Eq. 4): a sample x is a near-copy of its nearest
training image when

    ||x - NN_1(x)||_2 / ||x - NN_2(x)||_2 < 1/3,

with NN_1, NN_2 the nearest and second-nearest training images in pixel space ([-1, 1] pixels,
flattened). The ratio compares x's closeness to one training image with its closeness to the data in
general, so it is not fooled by simple images that are close to many training images. The same ratio is
also reported in feature space. If NN_2 is at distance 0, x equals a (duplicated) training image and
the ratio is 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from noisecraft.eval.common import EvalError

NEAR_COPY_THRESHOLD = 1.0 / 3.0


@dataclass
class Memorization:
    """Per sample: indices/distances of the k nearest training images in pixel (and feature) space."""

    pixel_index: np.ndarray       # (N, k) int64, nearest first
    pixel_distance: np.ndarray    # (N, k) float64
    feature_index: np.ndarray | None
    feature_distance: np.ndarray | None
    threshold: float = NEAR_COPY_THRESHOLD

    @property
    def pixel_ratio(self) -> np.ndarray:
        return distance_ratio(self.pixel_distance)

    @property
    def near_copies(self) -> float:
        """Fraction of samples that are near-copies by the pixel-space rule (module docstring)."""
        return float((self.pixel_ratio < self.threshold).mean())

    @property
    def near_copies_features(self) -> float | None:
        if self.feature_distance is None:
            return None
        return float((distance_ratio(self.feature_distance) < self.threshold).mean())


def nearest_neighbours(queries: np.ndarray, keys: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest `keys` (M, D) of each query (N, D) in Euclidean distance, float64, nearest first."""
    from noisecraft.eval.metrics import chunk_rows, squared_distances

    if not 1 <= k <= len(keys):
        raise EvalError(f"k must be in [1, {len(keys)}] (the number of training items), got {k}")
    idx = np.empty((len(queries), k), np.int64)
    dist = np.empty((len(queries), k))
    step = chunk_rows(len(keys))
    for s in range(0, len(queries), step):
        d2 = squared_distances(queries[s:s + step], keys)
        part = np.argpartition(d2, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(d2, part, 1).argsort(axis=1, kind="stable")
        idx[s:s + step] = np.take_along_axis(part, order, 1)
        dist[s:s + step] = np.sqrt(np.take_along_axis(d2, idx[s:s + step], 1))
    return idx, dist


def distance_ratio(dist: np.ndarray) -> np.ndarray:
    """d(x, NN_1) / d(x, NN_2) per sample; 0 where both are 0."""
    d1, d2 = dist[:, 0], dist[:, 1]
    return np.divide(d1, d2, out=np.zeros_like(d1), where=d2 > 0)


def memorization_report(samples, train_images, *, sample_features=None, train_features=None, k: int = 3,
                 threshold: float = NEAR_COPY_THRESHOLD) -> Memorization:
    """Nearest training images of each sample (pixel space, and feature space when features are given).

    samples, train_images: (N, C, H, W) and (M, C, H, W) in [-1, 1] with the same (C, H, W).
    """
    x = np.asarray(samples, np.float64).reshape(len(samples), -1)
    y = np.asarray(train_images, np.float64).reshape(len(train_images), -1)
    if tuple(samples.shape[1:]) != tuple(train_images.shape[1:]):
        raise EvalError(f"samples {tuple(samples.shape[1:])} and training images {tuple(train_images.shape[1:])} "
                        f"differ in shape; pixel-space neighbours need the same (C, H, W)")
    k = max(2, min(k, len(y)))
    if len(y) < 2:
        raise EvalError("the memorisation check needs at least 2 training images")
    pi, pd = nearest_neighbours(x, y, k)
    fi = fd = None
    if sample_features is not None and train_features is not None:
        fi, fd = nearest_neighbours(np.asarray(sample_features, np.float64), np.asarray(train_features, np.float64), k)
    return Memorization(pi, pd, fi, fd, threshold)


def save_neighbours_png(samples, train_images, report: Memorization, path, *, num: int = 16, scale: int = 2) -> None:
    """PNG: one row per sample, most copy-like (smallest pixel ratio) first: the sample, its k nearest
    training images in pixel space, then its nearest in feature space (if computed). The JSON text chunk
    `noisecraft` lists the rows' sample indices, ratios and the rule."""
    import torch

    from noisecraft.viz import grid_image, save_png

    order = np.argsort(report.pixel_ratio, kind="stable")[:num]
    tiles = []
    for i in order:
        tiles.append(torch.as_tensor(samples[i]))
        tiles += [torch.as_tensor(train_images[j]) for j in report.pixel_index[i]]
        if report.feature_index is not None:
            tiles.append(torch.as_tensor(train_images[report.feature_index[i, 0]]))
    per_row = 1 + report.pixel_index.shape[1] + (report.feature_index is not None)
    info = {"rows": [int(i) for i in order], "pixel_ratio": [round(float(report.pixel_ratio[i]), 4) for i in order],
            "columns": "sample, pixel-space NN 1..k" + (", feature-space NN 1" if report.feature_index is not None
                                                       else ""),
            "rule": f"near-copy if d(x, NN1) / d(x, NN2) < {report.threshold:.4g} (pixel space)"}
    save_png(grid_image(torch.stack(tiles).float(), nrow=per_row), path, info=info, scale=scale)

