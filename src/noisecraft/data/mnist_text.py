"""MNIST with captions ("mnist-text"): the bundled MNIST digits, each captioned by its class in words
("the digit seven"), so a text-to-image model learns class-conditional generation through a text encoder
(MNIST-class-as-text). The images, labels and splits are those of dataset "mnist"."""

from __future__ import annotations

from dataclasses import replace

from noisecraft.data.base import ImageDataset
from noisecraft.data.digits import load_mnist

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def digit_caption(label: int) -> str:
    """The caption of digit `label` (0..9): "the digit seven"."""
    return f"the digit {DIGIT_WORDS[label]}"


def load_mnist_text(*, root=None, resolution=None, channels=None, split="all", limit=None,
                    seed=0) -> ImageDataset:
    """Dataset "mnist" with one caption per image, `digit_caption(label)`."""
    ds = load_mnist(root=root, resolution=resolution, channels=channels, split=split, limit=limit, seed=seed)
    captions = tuple(digit_caption(int(y)) for y in ds.labels)
    return replace(ds, name="mnist-text", captions=captions)
