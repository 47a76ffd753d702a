"""Datasets: bundled digits, image folders and 2-D toy distributions, all as one `ImageDataset`.

    ds = load_dataset("mnist", split="train")        # (4500, 1, 28, 28) in [-1, 1], labels 0..9
    ds = load_dataset("folder", root="pics", resolution=64)
    ds = load_dataset("8gaussians", limit=2000, seed=1)   # (2000, 2) points

Importing this package is light: Pillow, mlxtend and scikit-learn load only when needed.
"""

from noisecraft.data.base import (
    SPLITS,
    ImageDataset,
    convert_channels,
    resize_images,
    split_indices,
    validate_batch_images,
)
from noisecraft.data.datasets import DATASETS, DEFAULT_FOLDER_RESOLUTION, available_datasets, load_dataset
from noisecraft.data.images import IMAGE_EXTENSIONS, find_image_files, load_image, to_uint8_image

__all__ = [
    "DATASETS",
    "DEFAULT_FOLDER_RESOLUTION",
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "ImageDataset",
    "available_datasets",
    "convert_channels",
    "find_image_files",
    "load_dataset",
    "load_image",
    "resize_images",
    "split_indices",
    "to_uint8_image",
    "validate_batch_images",
]
