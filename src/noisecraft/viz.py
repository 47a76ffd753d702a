"""Pictures people would rather look at than read: sample grids, loss curves, trajectories."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8 (rounded, clipped)."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def grid_image(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile (N, C, H, W) images in [-1, 1] into one (H', W', C) uint8 array with a pad-pixel border."""
    arr = to_uint8(images)
    n, h, w, c = arr.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    out = np.zeros((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, nrow)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = arr[i]
    return out


def _pil(arr: np.ndarray, scale: int = 1):
    from PIL import Image

    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


def save_png(arr: np.ndarray, path, *, parameters: str | None = None, info: dict | None = None, scale: int = 1):
    """Save a uint8 array as PNG with A1111-style `parameters` text and our JSON chunk `noisecraft`.
    Deterministic: the same array and metadata give the same bytes."""
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    if parameters:
        meta.add_text("parameters", parameters)
    if info:
        meta.add_text("noisecraft", json.dumps(info, sort_keys=True))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    _pil(arr, scale).save(path, format="PNG", pnginfo=meta)


def save_grid(images: torch.Tensor, path, *, nrow: int | None = None, scale: int = 2, parameters: str | None = None,
              info: dict | None = None) -> None:
    """A grid PNG of (N, C, H, W) images in [-1, 1], enlarged `scale` times; `info` (the `noisecraft` JSON chunk)
    gains grid = true, num and nrow, so readers (noisecraft.eval.image_io) split it into its tiles."""
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    if info is not None:
        info = {**info, "grid": True, "num": len(images), "nrow": nrow}
    save_png(grid_image(images, nrow), path, scale=scale, parameters=parameters, info=info)


def save_points(points: torch.Tensor, path, *, title: str = "") -> None:
    """Scatter plot of 2-D samples."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    p = points.detach().cpu().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=2, alpha=0.5)
    ax.set_aspect("equal")
    ax.set_title(title)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def pyplot():
    """matplotlib.pyplot on the Agg backend (files, no screen), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss(log: list[dict], path, *, title: str = "training loss") -> None:
    """Loss (raw and smoothed) against step, log-scale y."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [r["step"] for r in log]
    ax.plot(steps, [r["loss"] for r in log], lw=0.7, alpha=0.5, label="loss")
    smooth = [(r["step"], r["loss_smooth"]) for r in log if r.get("loss_smooth") is not None]
    if smooth:
        ax.plot(*zip(*smooth), lw=1.5, label="smoothed")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def upscale(arr: np.ndarray, scale: int) -> np.ndarray:
    """(H, W, C) -> (H scale, W scale, C), each pixel repeated (nearest neighbour)."""
    return arr if scale == 1 else np.repeat(np.repeat(arr, scale, axis=0), scale, axis=1)


def label_columns(arr: np.ndarray, labels: list[str]) -> np.ndarray:
    """(H, W, C) uint8 -> (H + band, W, C): the picture unchanged above a black band in which labels[i]
    (lines split at newlines) is written in white, PIL's default font, centred under the i-th of
    len(labels) equal-width columns."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    line = font.getbbox("Ag")[3] + 2
    band = np.zeros((2 + line * max(lbl.count("\n") + 1 for lbl in labels), arr.shape[1], arr.shape[2]), np.uint8)
    img = Image.fromarray(band[..., 0] if arr.shape[2] == 1 else band)
    draw = ImageDraw.Draw(img)
    width = arr.shape[1] / len(labels)
    for i, text in enumerate(labels):
        draw.multiline_text(((i + 0.5) * width, 1), text, fill=255 if img.mode == "L" else (255,) * 3, font=font,
                            anchor="ma", align="center", spacing=2)
    drawn = np.asarray(img).reshape(band.shape)
    return np.concatenate([arr, drawn], axis=0)


def sigma_label(sigma: float) -> str:
    return f"sigma={sigma:.3g}"


def trajectory_frames(frames: list[tuple[float, torch.Tensor, torch.Tensor]], scale: int = 1) -> list[np.ndarray]:
    """[(sigma, x, denoised)] of one sample -> per step a uint8 picture, enlarged `scale` times: x_t (scaled
    to unit variance) above the x0 estimate, with the step's noise level written under them."""
    out = []
    for sigma, x, den in frames:
        xt = x / math.sqrt(1 + sigma**2)  # the VP view has unit scale at every noise level
        out.append(label_columns(upscale(grid_image(torch.stack([xt, den]), nrow=1), scale), [sigma_label(sigma)]))
    return out


def save_trajectory(frames: list[tuple[float, torch.Tensor, torch.Tensor]], path, scale: int = 3) -> None:
    """A strip (PNG: columns = steps; top x_t, then the x0 estimate, then sigma) or an animation (GIF)."""
    pics = trajectory_frames(frames, scale)
    path = Path(path)
    if path.suffix.lower() == ".gif":
        imgs = [_pil(p) for p in pics]
        imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=200, loop=0)
    else:
        save_png(np.concatenate(pics, axis=1), path, info={"sigmas": [round(float(f[0]), 5) for f in frames]})
