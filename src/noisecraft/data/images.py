"""Reading pictures from disk (Pillow, imported lazily) and writing tensors back to 8-bit pixels.

Pixel convention: an 8-bit value `u` is `u / 127.5 - 1` in [-1, 1]; `to_uint8_image` inverts it
exactly (round, then clip). Pictures are turned upright from their EXIF orientation; transparent
pixels are composited over white; 16-bit grayscale is reduced to 8 bits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from noisecraft.data.base import uint8_to_float
from noisecraft.errors import DataError

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
CHANNELS = (1, 3)
MIN_RESOLUTION = 4


def check_image_options(resolution: int | None, channels: int | None) -> None:
    """Raise DataError unless resolution is None or an int >= 4 and channels is None, 1 or 3."""
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int)
                                   or resolution < MIN_RESOLUTION):
        raise DataError(f"resolution must be an integer >= {MIN_RESOLUTION}, got {resolution!r}")
    if channels is not None and (isinstance(channels, bool) or channels not in CHANNELS):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")


def is_image_file(path: Path) -> bool:
    """A visible file whose extension (any case) is one of IMAGE_EXTENSIONS."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _images_below(folder: Path) -> list[Path]:
    """Image files anywhere below `folder`, sorted, skipping hidden files and hidden folders."""
    def visible(p: Path) -> bool:
        return not any(part.startswith(".") for part in p.relative_to(folder).parts)

    return sorted(p for p in folder.rglob("*") if is_image_file(p) and visible(p))


def _to_pixels(img, channels: int | None):
    """A Pillow image -> mode "L" (channels 1) or "RGB" (channels 3); None keeps gray as gray."""
    from PIL import Image

    if img.mode.startswith("I;16") or img.mode in ("I", "F"):  # 16-bit / 32-bit grayscale
        scale = 255.0 / 65535.0 if img.mode != "F" else 255.0
        arr = np.asarray(img, dtype=np.float64) * scale
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if channels is None:
        channels = 1 if img.mode in ("1", "L", "LA", "La") else 3
    if img.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert("L" if channels == 1 else "RGB")


def _fit(img, resolution: int):
    """Scale so the short side is `resolution`, then centre-crop to a square (Lanczos)."""
    from PIL import Image, ImageOps

    return ImageOps.fit(img, (resolution, resolution), method=Image.Resampling.LANCZOS,
                        centering=(0.5, 0.5))


def read_image_uint8(path, resolution: int | None = None, channels: int | None = None) -> np.ndarray:
    """One picture as a uint8 array (H, W, C); DataError naming the file if it cannot be read."""
    from PIL import Image, ImageOps

    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            img = _to_pixels(img, channels)
    except FileNotFoundError as e:
        raise DataError(f"image file not found: {path}") from e
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e}") from e
    if resolution is not None:
        img = _fit(img, resolution)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr  # (H, W, C)


def grid_count(path) -> int | None:
    """The number of images of a noisecraft grid PNG (its `noisecraft` text chunk says grid = true, or, in
    files written before that flag, num > 1), else None: a one-image PNG, a foreign picture or not a PNG."""
    import json

    from PIL import Image

    path = Path(path)
    if path.suffix.lower() != ".png":
        return None
    try:
        with Image.open(path) as img:
            raw = dict(getattr(img, "text", None) or img.info).get("noisecraft")
        info = json.loads(raw) if raw else None
    except Exception:  # unreadable or foreign metadata: not one of our grids
        return None
    if not isinstance(info, dict) or not isinstance(info.get("num"), int):
        return None
    grid = info.get("grid")
    return info["num"] if grid is True or grid is None and info["num"] > 1 else None


def load_image(path, resolution: int | None = None, channels: int | None = None) -> torch.Tensor:
    """A single picture as a float32 tensor (C, H, W) in [-1, 1].

    resolution: None keeps the picture's size; an int >= 4 scales the short side to it and
                centre-crops to a square
    channels:   1 (grayscale), 3 (RGB), or None (grayscale files stay 1 channel, others RGB)
    """
    check_image_options(resolution, channels)
    arr = read_image_uint8(path, resolution, channels)  # (H, W, C)
    return uint8_to_float(arr).permute(2, 0, 1).contiguous()  # (C, H, W)


def to_uint8_image(t: torch.Tensor) -> np.ndarray:
    """A (C, H, W) (or (H, W)) tensor in [-1, 1] -> uint8 array (H, W, C), or (H, W) when C == 1.

    Values map back with round((t + 1) * 127.5) and are clipped to 0..255.
    """
    t = torch.as_tensor(t).detach().to("cpu", torch.float64)
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
        raise DataError(f"to_uint8_image expects a (C, H, W) tensor with C in 1, 3, 4 or an (H, W) "
                        f"tensor, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise DataError("to_uint8_image: the image has non-finite values (NaN or inf)")
    u = torch.round((t + 1.0) * 127.5).clamp(0, 255).to(torch.uint8)  # (C, H, W)
    arr = u.permute(1, 2, 0).numpy()  # (H, W, C)
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


def find_image_files(root) -> tuple[list[Path], list[int] | None, tuple[str, ...] | None]:
    """The image files under `root`, sorted, with class ids from top-level sub-folder names.

    Returns (files, labels, class_names); labels and class_names are None when `root` has no
    sub-folders. Hidden files and folders (names starting with ".") are skipped.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"dataset folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise DataError(f"dataset folder {str(root)!r} is not a directory")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        return _images_below(root), None, None
    loose = sorted(p.name for p in root.iterdir() if is_image_file(p))
    if loose:
        raise DataError(f"dataset folder {str(root)!r} mixes class sub-folders with loose images at its "
                        f"top level ({', '.join(loose[:3])}{', ...' if len(loose) > 3 else ''}); put every "
                        f"image in a class sub-folder, or use a folder without sub-folders for "
                        f"unlabelled data")
    files, labels = [], []
    for class_id, d in enumerate(subdirs):
        found = _images_below(d)
        if not found:
            raise DataError(f"class folder {str(d)!r} holds no images (allowed extensions: "
                            f"{', '.join(IMAGE_EXTENSIONS)})")
        files += found
        labels += [class_id] * len(found)
    return files, labels, tuple(d.name for d in subdirs)
