"""The dataset container and the checks every loader shares.

Conventions (used by every loader in `noisecraft.data`):

- Image data: `images` is `(N, C, *spatial)` float32 scaled to [-1, 1]. An 8-bit pixel value `u`
  maps to `u / 127.5 - 1`, so `to_uint8_image` inverts it exactly.
- Point data (the 2-D toy distributions): `images` is `(N, D)` float32, *not* scaled to [-1, 1];
  each generator documents its own scale.
- Splits are deterministic and keep file order: within each class, the first 90% of the items
  (all but the last `n // 10`) form "train", the remaining `n // 10` form "test"; "all" is
  everything. Unlabelled data counts as one class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from noisecraft.errors import DataError

SPLITS = ("all", "train", "test")
TEST_EVERY = 10  # within each class, the last n // TEST_EVERY items are the test split


@dataclass(frozen=True)
class ImageDataset:
    """A whole dataset in memory.

    name:        the registry name it was loaded under (e.g. "mnist", "folder")
    images:      (N, C, *spatial) float32 in [-1, 1]; for point data (N, D) float32, unscaled
    labels:      (N,) int64 class ids, or None when unlabelled
    class_names: one name per class id, or None when unlabelled
    captions:    one text caption per item (text-to-image data such as "glyphs", "scenes"), or None
    attributes:  per-item ground truth, name -> tensor whose first dimension is N (e.g. the scenes'
                 "colour" (N, 2)); the vocabularies are documented by the dataset's module; or None
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor | None = None
    class_names: tuple[str, ...] | None = None
    captions: tuple[str, ...] | None = None
    attributes: dict[str, torch.Tensor] | None = None

    def __post_init__(self):
        if not isinstance(self.images, torch.Tensor) or self.images.ndim < 2:
            raise DataError(f"dataset {self.name!r}: images must be a tensor of shape (N, ...), "
                            f"got {getattr(self.images, 'shape', type(self.images).__name__)}")
        if self.labels is not None:
            if tuple(self.labels.shape) != (len(self.images),) or self.labels.dtype != torch.int64:
                raise DataError(f"dataset {self.name!r}: labels must be int64 of shape "
                                f"({len(self.images)},), got {self.labels.dtype} {tuple(self.labels.shape)}")
            if self.class_names is None:
                raise DataError(f"dataset {self.name!r}: labels given without class_names")
        if self.captions is not None and (not isinstance(self.captions, tuple) or len(self.captions) != len(self)):
            raise DataError(f"dataset {self.name!r}: captions must be a tuple of {len(self)} strings, got "
                            f"{type(self.captions).__name__} of length {len(self.captions)}")
        for key, value in (self.attributes or {}).items():
            if not isinstance(value, torch.Tensor) or value.ndim < 1 or len(value) != len(self):
                raise DataError(f"dataset {self.name!r}: attribute {key!r} must be a tensor with first "
                                f"dimension {len(self)}, got {getattr(value, 'shape', type(value).__name__)}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def data_shape(self) -> tuple[int, ...]:
        """The shape of one item: (C, *spatial) for images, (D,) for points."""
        return tuple(self.images.shape[1:])

    @property
    def num_classes(self) -> int:
        """The number of classes; 0 when unlabelled."""
        return 0 if self.labels is None else len(self.class_names)

    @property
    def is_points(self) -> bool:
        """True for point data (N, D) such as the 2-D toy distributions."""
        return self.images.ndim == 2

    def subset(self, index) -> ImageDataset:
        """The items at `index` (a slice, or a 1-D tensor/array of positions), in that order."""
        if not isinstance(index, slice):
            index = torch.as_tensor(index, dtype=torch.long)
        labels = None if self.labels is None else self.labels[index]
        captions = None
        if self.captions is not None:
            captions = self.captions[index] if isinstance(index, slice) else \
                tuple(self.captions[i] for i in index.tolist())
        attributes = None if self.attributes is None else {k: v[index] for k, v in self.attributes.items()}
        return ImageDataset(self.name, self.images[index], labels, self.class_names, captions, attributes)


def count_nonfinite(x: torch.Tensor) -> int:
    """How many entries of `x` are NaN or +-inf."""
    return int((~torch.isfinite(x)).sum()) if x.is_floating_point() else 0


def validate_batch_images(x: torch.Tensor, what: str = "batch") -> torch.Tensor:
    """Raise DataError if `x` holds any NaN or inf; return `x` unchanged otherwise."""
    bad = count_nonfinite(x)
    if bad:
        raise DataError(f"{what} has {bad} non-finite value(s) (NaN or inf) out of {x.numel()}")
    return x


def split_indices(labels: np.ndarray | None, n: int, split: str) -> np.ndarray:
    """Positions (in file order) of the items in `split`; see the module docstring for the rule."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    if split == "all":
        return np.arange(n)
    labels = np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels)
    keep = np.zeros(n, dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)  # file order
        n_test = len(members) // TEST_EVERY
        n_train = len(members) - n_test
        keep[members[:n_train] if split == "train" else members[n_train:]] = True
    return np.flatnonzero(keep)


def uint8_to_float(u: np.ndarray) -> torch.Tensor:
    """uint8-valued array (0..255, any dtype) -> float32 tensor in [-1, 1]: u / 127.5 - 1."""
    return torch.from_numpy(np.asarray(u, dtype=np.float32) / np.float32(127.5) - np.float32(1.0))


LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as Pillow's RGB -> L


def resize_images(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, R, R): short side to R (antialiased bilinear), then centre crop."""
    h, w = x.shape[-2:]
    if h == w == resolution:
        return x
    s = resolution / min(h, w)
    size = (max(resolution, round(h * s)), max(resolution, round(w * s)))
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    return x[..., top:top + resolution, left:left + resolution].clamp(-1.0, 1.0).contiguous()


def convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, C, ...) with C in {1, 3} -> (N, channels, ...): gray is repeated, RGB goes to luma."""
    if x.shape[1] == channels:
        return x
    if channels == 3:
        return x.expand(-1, 3, *x.shape[2:]).contiguous()
    w = torch.tensor(LUMA, dtype=x.dtype).view(1, 3, *([1] * (x.ndim - 2)))
    return (x * w).sum(dim=1, keepdim=True)
