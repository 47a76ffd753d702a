"""Reading images to evaluate: a directory of pictures, a .npy array, or a noisecraft grid PNG.

- Directory: every image file below it (sorted, hidden files skipped; extensions as noisecraft.data).
  Gray files among RGB ones are repeated to RGB; different heights/widths are an error (resize them
  yourself, or evaluate each size separately: the metrics compare like with like).
- .npy: (N, C, H, W) or (N, H, W, C) with C = 1 or 3, or (N, H, W) gray. Read with allow_pickle=False.
  A shape that fits both layouts (both axis 1 and axis 3 of size 1 or 3) is refused unless `layout`
  ("nchw" or "nhwc") says which. Values: uint8 0..255; floats in [-1, 1], [0, 1] or 0..255, detected when
  the values make it unambiguous and refused when not (all values in [0, 1]) unless `value_range` says
  which (noisecraft.eval.features.prepare_images).
- PNG written by noisecraft (`noisecraft sample`, training previews): its text chunk `noisecraft` holds
  JSON with `num`, the number of images, and `grid` (true for a grid, false for one image per file; files
  written before `grid` existed are one image when their size is the `Size` of their `parameters`
  chunk). The grid (noisecraft.viz.grid_image) has ceil(sqrt(num))
  columns (or `nrow` from the JSON), a 2-pixel black border around and between tiles, and was enlarged by
  an integer factor (nearest neighbour). The tile size comes from the `parameters` chunk ("Size: WxH")
  when present, otherwise from the largest enlargement factor that fits the geometry, reproduces the
  picture exactly by nearest-neighbour enlargement and leaves the border black. Such PNGs are split into
  their tiles also when found inside a directory. A PNG without that chunk is one image.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from noisecraft.eval.common import EvalError

GRID_PAD = 2  # noisecraft.viz.grid_image's default pad


def _png_info(path: Path) -> tuple[dict | None, str | None]:
    from PIL import Image

    try:
        with Image.open(path) as img:
            text = dict(getattr(img, "text", None) or img.info)
    except Exception:
        return None, None
    raw = text.get("noisecraft")
    try:
        info = json.loads(raw) if raw else None
    except ValueError:
        info = None
    return (info if isinstance(info, dict) and isinstance(info.get("num"), int) else None), text.get("parameters")


def _tile_size_from_parameters(parameters: str | None) -> tuple[int, int] | None:
    m = re.search(r"Size: (\d+)x(\d+)", parameters or "")
    return (int(m.group(2)), int(m.group(1))) if m else None  # (h, w) from "Size: WxH"


def _grid_geometry(arr: np.ndarray, num: int, nrow: int, size_hw) -> tuple[int, int, int]:
    """(scale, h, w) of a grid picture arr (H', W', C); EvalError if nothing consistent is found."""
    rows = math.ceil(num / nrow)
    big_h, big_w = arr.shape[:2]
    for s in range(16, 0, -1):
        if big_h % s or big_w % s:
            continue
        small = arr[::s, ::s]
        (hs, ws), p = small.shape[:2], GRID_PAD
        if (ws - p) % nrow or (hs - p) % rows:
            continue
        h, w = (hs - p) // rows - p, (ws - p) // nrow - p
        if h < 1 or w < 1 or (size_hw is not None and (h, w) != tuple(size_hw)):
            continue
        if not np.array_equal(np.repeat(np.repeat(small, s, 0), s, 1), arr):
            continue
        border = np.ones(small.shape[:2], bool)  # everything outside the tiles is black in a noisecraft grid
        for i in range(num):
            r, k = divmod(i, nrow)
            border[p + r * (h + p): p + r * (h + p) + h, p + k * (w + p): p + k * (w + p) + w] = False
        if not (small[border] == 0).all():
            continue
        return s, h, w
    raise EvalError(f"cannot split the noisecraft grid into {num} tiles ({nrow} per row, 2-px border) for a "
                    f"{big_w}x{big_h} picture; was it resized or edited? Pass the images as a directory or .npy")


def split_grid(arr: np.ndarray, num: int, nrow: int | None = None, size_hw=None) -> np.ndarray:
    """A noisecraft grid picture (H', W', C) uint8 -> its `num` tiles (num, h, w, C)."""
    nrow = nrow or math.ceil(math.sqrt(num))
    s, h, w = _grid_geometry(arr, num, nrow, size_hw)
    small, p = arr[::s, ::s], GRID_PAD
    tiles = []
    for i in range(num):
        r, k = divmod(i, nrow)
        top, left = p + r * (h + p), p + k * (w + p)
        tiles.append(small[top:top + h, left:left + w])
    return np.stack(tiles)


def _read_picture(path: Path) -> np.ndarray:
    """One picture file -> (n, h, w, C) uint8: the tiles of a noisecraft grid, else the picture itself."""
    from noisecraft.data.images import read_image_uint8

    arr = read_image_uint8(path)  # (H, W, C)
    info, parameters = _png_info(path) if path.suffix.lower() == ".png" else (None, None)
    size_hw = _tile_size_from_parameters(parameters)
    if not is_grid(info, arr.shape[:2], size_hw):
        return arr[None]
    return split_grid(arr, info["num"], info.get("nrow"), size_hw)


def is_grid(info: dict | None, picture_hw, size_hw) -> bool:
    """Whether a picture with this `noisecraft` chunk is a grid of tiles rather than one image (module
    docstring): the chunk's `grid` flag, else (older files) a one-image file is one whose picture has its
    `Size`."""
    if info is None:
        return False
    if isinstance(info.get("grid"), bool):
        return info["grid"]
    return not (info["num"] == 1 and size_hw is not None and tuple(picture_hw) == tuple(size_hw))


def read_single_image(path, what: str = "--image", channels: int | None = None):
    """One image from a picture file as float32 (C, H, W) in [-1, 1]: the picture itself, or the one tile of a
    noisecraft grid PNG holding a single image (`sample --num 1 --out x.png`). A grid of several images is an
    error that says how to get one image per file. channels: 1, 3 or None (as noisecraft.data.load_image:
    gray files stay one channel, others RGB)."""
    import torch

    from noisecraft.data import convert_channels
    from noisecraft.data.images import check_image_options

    check_image_options(None, channels)
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"{what} {str(path)!r} is not a file")
    tiles = _read_picture(path)  # (n, h, w, C) uint8
    if len(tiles) != 1:
        raise EvalError(f"{what} {str(path)!r} is a noisecraft grid of {len(tiles)} images; give one image (a "
                        f"file of `noisecraft sample --out DIR`, one PNG per image, or --num 1)")
    x = torch.from_numpy(np.array(tiles[:1])).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (1, C, H, W)
    return (x if channels is None else convert_channels(x, channels))[0]


def _stack(pictures: list[tuple[Path, np.ndarray]]) -> np.ndarray:
    """Concatenate (n, h, w, C) arrays; gray is repeated to RGB when mixed; mixed sizes are an error."""
    sizes = {}
    for path, a in pictures:
        sizes.setdefault(a.shape[1:3], path)
    if len(sizes) > 1:
        (s1, p1), (s2, p2) = list(sizes.items())[:2]
        raise EvalError(f"images of mixed sizes: {p1} is {s1[1]}x{s1[0]} but {p2} is {s2[1]}x{s2[0]} "
                        f"(width x height); all images must share one size")
    if len({a.shape[3] for _, a in pictures}) > 1:
        pictures = [(p, np.repeat(a, 3, axis=3) if a.shape[3] == 1 else a) for p, a in pictures]
    return np.concatenate([a for _, a in pictures])


LAYOUTS = ("nchw", "nhwc")


def _from_npy(path: Path, layout: str = "auto") -> np.ndarray:
    if layout not in ("auto", *LAYOUTS):
        raise EvalError(f"unknown array layout {layout!r}; allowed: auto, {', '.join(LAYOUTS)}")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:
        raise EvalError(f"cannot read {path} as a numpy array: {type(e).__name__}: {e}") from None
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim == 4 and layout == "auto" and arr.shape[1] in (1, 3) and arr.shape[3] in (1, 3):
        raise EvalError(f"{path}: shape {arr.shape} fits both (N, C, H, W) and (N, H, W, C); say which with "
                        f"--layout nchw or --layout nhwc")
    if arr.ndim == 4 and (layout == "nhwc" or layout == "auto" and arr.shape[1] not in (1, 3)
                          and arr.shape[3] in (1, 3)):
        arr = arr.transpose(0, 3, 1, 2)  # channels-last -> (N, C, H, W)
    if arr.ndim != 4 or arr.shape[1] not in (1, 3):
        raise EvalError(f"{path}: expected (N, C, H, W), (N, H, W, C) with C = 1 or 3, or (N, H, W); "
                        f"got shape {arr.shape}")
    return arr


def load_images(path, *, value_range: str = "auto", layout: str = "auto"):
    """Images to evaluate from a directory, .npy file or (grid) picture -> float32 (N, C, H, W) in [-1, 1].
    value_range and layout apply to .npy arrays (module docstring); pictures are 0..255."""
    import torch

    from noisecraft.data import IMAGE_EXTENSIONS
    from noisecraft.data.images import is_image_file
    from noisecraft.eval.features import prepare_images

    path = Path(path)
    if not path.exists():
        raise EvalError(f"images not found: {path}")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if is_image_file(p)
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise EvalError(f"no images under {path}; allowed extensions: {', '.join(IMAGE_EXTENSIONS)}")
        arr = torch.from_numpy(_stack([(f, _read_picture(f)) for f in files])).permute(0, 3, 1, 2)
    elif path.suffix.lower() == ".npy":
        arr = _from_npy(path, layout)
    elif path.suffix.lower() in IMAGE_EXTENSIONS:
        arr = torch.from_numpy(_read_picture(path)).permute(0, 3, 1, 2)
    else:
        raise EvalError(f"{path}: expected a directory of images, a .npy array, or a picture "
                        f"({', '.join(IMAGE_EXTENSIONS)})")
    return prepare_images(arr, value_range if path.suffix.lower() == ".npy" else "auto")  # pictures are uint8
