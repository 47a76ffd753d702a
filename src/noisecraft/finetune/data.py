"""The images of a concept to fine-tune on: a folder of 5-20 pictures, all of one size.

`concept_images(folder, image_shape)` reads every image below the folder (hidden files skipped) with the base
model's channels. A folder with no images, or with images of several sizes, is an error saying what was found; a
folder of one size other than the base's is scaled and centre-cropped to it (Lanczos), and the returned note says
so.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from noisecraft.errors import DataError


def concept_images(folder, image_shape: tuple[int, ...]) -> tuple[torch.Tensor, str | None]:
    """(images (N, C, H, W) in [-1, 1] at the base's image size, a note when they were resized or None)."""
    from noisecraft.data.base import uint8_to_float
    from noisecraft.data.datasets import check_no_grids
    from noisecraft.data.images import IMAGE_EXTENSIONS, find_image_files, read_image_uint8

    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"--images {str(root)!r} is not a folder of images")
    files, _, _ = find_image_files(root)
    if not files:
        others = sorted(p.name for p in root.rglob("*") if p.is_file())
        shown = f"; it holds {len(others)} other files ({', '.join(others[:5])}{', ...' if len(others) > 5 else ''})" \
            if others else "; it is empty"
        raise DataError(f"--images {str(root)!r} has no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
                        f"{shown}")
    channels, height, width = int(image_shape[0]), int(image_shape[-2]), int(image_shape[-1])
    check_no_grids(files)
    arrays = [read_image_uint8(f, None, channels) for f in files]  # (H, W, C) each
    sizes = Counter((a.shape[1], a.shape[0]) for a in arrays)
    if len(sizes) > 1:
        example = {}
        for f, a in zip(files, arrays):
            example.setdefault((a.shape[1], a.shape[0]), f.name)
        found = ", ".join(f"{n} of {w}x{h} (e.g. {example[w, h]})" for (w, h), n in sizes.most_common())
        raise DataError(f"--images {str(root)!r} mixes image sizes: {found}; give images of one size "
                        f"(the base model draws {width}x{height})")
    (w, h), = sizes
    note = None
    if (w, h) != (width, height):
        if height != width:
            raise DataError(f"--images {str(root)!r}: the images are {w}x{h} but the base model draws {width}x{height}")
        arrays = [read_image_uint8(f, width, channels) for f in files]
        note = f"{len(files)} images of {w}x{h} scaled and centre-cropped to the base model's {width}x{height}"
    images = torch.stack([uint8_to_float(a).permute(2, 0, 1) for a in arrays])  # (N, C, H, W)
    return images.contiguous(), note
