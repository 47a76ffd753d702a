"""Reference statistics of a dataset: features, mean and covariance, computed once and cached on disk.

Cache directory: $NOISECRAFT_CACHE, else ~/.cache/noisecraft (`noisecraft.paths.cache_dir`). One
safetensors file per key:

    ref-<dataset>-<split>-<features>-<hash>.safetensors
        tensors   features (N, D) float32 (the network's own precision, so lossless),
                  mu (D,) float64, sigma (D, D) float64 (numpy.cov, ddof 1)
        metadata  "noisecraft" -> JSON of the key and N

The key holds everything that changes the numbers: dataset name, split, root (for folders: also the
file count and newest modification time), resolution, channels, limit, the feature extractor's
`version` (name, preprocessing version, input size, weights fingerprint) and CACHE_VERSION. A file that
cannot be read is recomputed and replaced (written atomically).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from noisecraft.paths import cache_dir

CACHE_VERSION = "1"


@dataclass
class Reference:
    """Features and Gaussian statistics of a reference dataset."""

    features: np.ndarray  # (N, D) float64
    mu: np.ndarray        # (D,)
    sigma: np.ndarray     # (D, D)
    key: dict             # what they were computed from (see the module docstring)
    path: Path | None = None  # the cache file, if cached

    def __len__(self) -> int:
        return len(self.features)


def _folder_state(root) -> dict:
    from noisecraft.data import find_image_files

    files, _, _ = find_image_files(root)
    return {"root": str(Path(root).resolve()), "files": len(files),
            "mtime": max((f.stat().st_mtime_ns for f in files), default=0)}


def reference_key(dataset: str, split: str, extractor, *, root=None, resolution=None, channels=None,
                  limit=None) -> dict:
    key = {"cache_version": CACHE_VERSION, "dataset": dataset, "split": split, "resolution": resolution,
           "channels": channels, "limit": limit, "features": extractor.name, "extractor": extractor.version}
    if root is not None:
        key.update(_folder_state(root) if dataset == "folder" else {"root": str(root)})
    return key


def cache_path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"ref-{key['dataset']}-{key['split']}-{key['features']}-{digest}.safetensors"


def reference_from_features(features: np.ndarray, key: dict, path: Path | None = None) -> Reference:
    from noisecraft.eval.metrics import gaussian_stats

    mu, sigma = gaussian_stats(features)
    return Reference(features, mu, sigma, key, path)


def _read(path: Path, key: dict) -> Reference | None:
    from safetensors.numpy import load_file

    try:
        t = load_file(str(path))
        return Reference(t["features"].astype(np.float64), t["mu"], t["sigma"], key, path)
    except Exception as e:  # corrupt or partial file: recompute
        warnings.warn(f"reference cache {path} is unreadable ({type(e).__name__}: {e}); recomputing", stacklevel=3)
        return None


def _write(ref: Reference, path: Path) -> None:
    from safetensors.numpy import save

    from noisecraft.files import atomic_write_bytes

    tensors = {"features": ref.features.astype(np.float32), "mu": ref.mu, "sigma": ref.sigma}
    meta = {"noisecraft": json.dumps({**ref.key, "n": len(ref)}, sort_keys=True)}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save(tensors, metadata=meta))


def load_reference(dataset: str, extractor, *, split: str = "train", root=None, resolution=None, channels=None,
                   limit=None, use_cache: bool = True) -> Reference:
    """Reference features and statistics of `dataset` (any `noisecraft.data.load_dataset` name) under
    `extractor`, from the cache when present, else computed and cached."""
    from noisecraft.data import load_dataset

    key = reference_key(dataset, split, extractor, root=root, resolution=resolution, channels=channels, limit=limit)
    path = cache_path(key)
    if use_cache and path.is_file():
        ref = _read(path, key)
        if ref is not None:
            return ref
    ds = load_dataset(dataset, root=root, resolution=resolution, channels=channels, split=split, limit=limit)
    if ds.is_points:
        from noisecraft.eval.common import EvalError

        raise EvalError(f"dataset {dataset!r} holds 2-D points, not images; image metrics need an image dataset")
    ref = reference_from_features(extractor(ds.images), key, path if use_cache else None)
    if use_cache:
        _write(ref, path)
    return ref
