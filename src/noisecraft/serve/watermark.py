"""An invisible watermark on every served image, with the `invisible-watermark` library (`imwatermark`) that
Stable Diffusion's reference scripts use (`scripts/txt2img.py`, `put_watermark`): a payload embedded in the
DWT-DCT-SVD domain of the image's chroma (Navas et al. 2008, "DWT-DCT-SVD based watermarking"), readable
without the original. The library needs images of at least 256 x 256 pixels (`MIN_PIXELS`); smaller outputs
are enlarged first (`display_scale`).
"""

from __future__ import annotations

import numpy as np

PAYLOAD = b"nc:w"                 # the watermark's bytes: 32 bits (a short payload is repeated more, so it
                                  # survives JPEG better; a random image matches 28 of 32 bits with p ~ 1e-5)
METHOD = "dwtDctSvd"              # imwatermark's method: more robust to JPEG than plain dwtDct
MIN_PIXELS = 256 * 256            # imwatermark refuses smaller images
FOUND_ACCURACY = 0.85             # bit accuracy at which a watermark counts as found (chance: about 0.5)


def display_scale(height: int, width: int) -> int:
    """The smallest integer factor k with (k height) (k width) >= MIN_PIXELS and k min(h, w) >= 256."""
    k = 1
    while (k * height) * (k * width) < MIN_PIXELS or k * min(height, width) < 256:
        k += 1
    return k


def embed(rgb: np.ndarray, payload: bytes = PAYLOAD) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> the same with `payload` embedded. NoisecraftError for images under MIN_PIXELS."""
    from imwatermark import WatermarkEncoder

    _check_size(rgb)
    encoder = WatermarkEncoder()
    encoder.set_watermark("bytes", payload)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    return np.ascontiguousarray(encoder.encode(bgr, METHOD)[..., ::-1])


def bit_accuracy(rgb: np.ndarray, payload: bytes = PAYLOAD) -> float:
    """The fraction of payload bits read back from (H, W, 3) uint8 RGB (about 0.5 for an unmarked image)."""
    from imwatermark import WatermarkDecoder

    _check_size(rgb)
    decoder = WatermarkDecoder("bytes", len(payload) * 8)
    read = np.frombuffer(decoder.decode(np.ascontiguousarray(rgb[..., ::-1]), METHOD), np.uint8)
    want = np.frombuffer(payload, np.uint8)
    return float((np.unpackbits(read) == np.unpackbits(want)).mean())


def is_marked(rgb: np.ndarray, payload: bytes = PAYLOAD) -> bool:
    return bit_accuracy(rgb, payload) >= FOUND_ACCURACY


def _check_size(rgb: np.ndarray) -> None:
    from noisecraft.errors import NoisecraftError

    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise NoisecraftError(f"watermarking takes (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    if rgb.shape[0] * rgb.shape[1] < MIN_PIXELS:
        raise NoisecraftError(f"the watermark needs at least 256x256 pixels, got {rgb.shape[1]}x{rgb.shape[0]}")
