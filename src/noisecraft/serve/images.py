"""Images in and out of the server: base64 PNGs carrying the A1111 `parameters` text and our `noisecraft` JSON
(written by `noisecraft.viz.save_png`, as the CLI's), the watermark, and decoding uploaded images."""

from __future__ import annotations

import base64
import binascii
import io
import os
import tempfile
from datetime import datetime, timezone

import numpy as np
import torch

from noisecraft.errors import NoisecraftError
from noisecraft.serve import watermark


def to_rgb(images: torch.Tensor, scale: int) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] (C = 1 or 3) -> (N, H scale, W scale, 3) uint8, each pixel repeated."""
    from noisecraft.viz import to_uint8, upscale

    arr = to_uint8(images)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.shape[-1] != 3:
        raise NoisecraftError(f"the server serves 1- or 3-channel images, got {arr.shape[-1]} channels")
    return np.stack([upscale(a, scale) for a in arr])


def provenance(model: str, model_hash: str, marked: bool) -> dict:
    """What the `noisecraft` PNG chunk records of an image's origin."""
    from noisecraft import __version__

    out = {"generator": f"noisecraft {__version__}", "model": model, "model_hash": model_hash,
           "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if marked:
        out["watermark"] = {"library": "invisible-watermark", "method": watermark.METHOD,
                            "payload": watermark.PAYLOAD.decode()}
    return out


def png_bytes(rgb: np.ndarray, parameters: str, info: dict) -> bytes:
    """One PNG with its metadata, through the CLI's writer (`viz.save_png`)."""
    from noisecraft.viz import save_png

    fd, path = tempfile.mkstemp(suffix=".png")
    os.close(fd)
    try:
        save_png(rgb, path, parameters=parameters, info=info)
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_image(data: str, what: str = "image"):
    """A base64 image (optionally a data: URL) -> a PIL image; NoisecraftError naming `what` if it is not one."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(data, str) or not data:
        raise NoisecraftError(f"{what} must be a base64-encoded PNG or JPEG")
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data, validate=True)
        image = Image.open(io.BytesIO(raw))
        image.load()
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError):
        raise NoisecraftError(f"{what} is not a decodable base64 PNG or JPEG image") from None
    return image


def image_tensor(image, size: tuple[int, int], channels: int, what: str = "init image") -> torch.Tensor:
    """PIL image -> (C, H, W) in [-1, 1] at the model's size (H, W) (resized if it differs, as A1111 does)."""
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (size[1], size[0]):
        from PIL import Image

        image = image.resize((size[1], size[0]), Image.BICUBIC)
    arr = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()) / 127.5 - 1
    return arr[None] if arr.ndim == 2 else arr.permute(2, 0, 1)


def mask_tensor(image, size: tuple[int, int]) -> torch.Tensor:
    """A mask image -> (1, H, W) in {0, 1}: 1 (white) is regenerated, A1111's convention."""
    from PIL import Image

    gray = image.convert("L").resize((size[1], size[0]), Image.NEAREST)
    return (torch.from_numpy(np.asarray(gray).copy()) >= 128).float()[None]


def png_parameters(image) -> tuple[str, dict]:
    """(the `parameters` text, our `noisecraft` JSON) of a PNG (empty when absent)."""
    import json

    text = getattr(image, "text", None) or image.info
    meta = text.get("noisecraft")
    try:
        meta = json.loads(meta) if meta else {}
    except ValueError:
        meta = {}
    return text.get("parameters", ""), meta
