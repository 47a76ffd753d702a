"""Writing generated clips: GIF, MP4 (H.264) and WebM (VP9) through PyAV, and a frame-strip PNG preview.

Writers follow `noisecraft.pipelines.outputs` (`write(result, out, run) -> Path`); `result.images` are clips
(N, C, T, H, W) in [-1, 1]. A file shows all N clips tiled as a grid, frame by frame (GIF / video), or one row per
clip with its frames left to right (PNG); a directory gets one GIF per clip, named by seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from noisecraft.errors import NoisecraftError

FPS = 8
SCALE = 2  # pixels are enlarged this many times (nearest) in every file
CODECS = {".mp4": "libx264", ".webm": "libvpx-vp9"}


def _check_clips(images: torch.Tensor) -> torch.Tensor:
    if images.ndim != 5:
        raise NoisecraftError(f"a video writer needs clips (N, C, T, H, W), got {tuple(images.shape)}")
    return images


def grid_frames(clips: torch.Tensor, scale: int = SCALE) -> np.ndarray:
    """(N, C, T, H, W) in [-1, 1] -> (T, H', W', 3) uint8: every frame of the N clips tiled as one grid."""
    from noisecraft.viz import grid_image, upscale

    clips = _check_clips(clips)
    frames = [grid_image(clips[:, :, t]) for t in range(clips.shape[2])]  # each (H', W', C)
    out = np.stack([upscale(f, scale) for f in frames])
    return np.repeat(out, 3, axis=-1) if out.shape[-1] == 1 else out


def strip_image(clips: torch.Tensor, pad: int = 2) -> np.ndarray:
    """(N, C, T, H, W) -> one (H', W', C) uint8 image: row i holds clip i's frames left to right."""
    from noisecraft.viz import grid_image

    clips = _check_clips(clips)
    N, C, T = clips.shape[:3]
    frames = clips.transpose(1, 2).reshape(N * T, C, *clips.shape[3:])  # clip-major: row i = clip i
    return grid_image(frames, nrow=T, pad=pad)


def write_gif(result, out: Path, run=None) -> Path:
    """An animated GIF (FPS frames per second, looping) of the clips' grid."""
    from PIL import Image

    frames = [Image.fromarray(f) for f in grid_frames(result.images)]
    out.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=round(1000 / FPS), loop=0)
    return out


def write_video(result, out: Path, run=None) -> Path:
    """An MP4 (H.264) or WebM (VP9) file of the clips' grid, yuv420p (sides padded to even)."""
    import av

    frames = grid_frames(result.images)
    T, H, W, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)))
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out), mode="w") as container:
        stream = container.add_stream(CODECS[out.suffix.lower()], rate=FPS)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out


def write_strip(result, out: Path, run=None) -> Path:
    """A PNG preview: one row per clip, its frames left to right, with the generation's parameters."""
    from noisecraft.viz import save_png

    save_png(strip_image(result.images), out, parameters=result.infotext(0), info=result.parameters, scale=SCALE)
    return out


def write_directory(result, out: Path, run=None) -> Path:
    """One GIF per clip, named by its seed."""
    for i, seed in enumerate(result.seeds):
        one = type(result)(result.images[i:i + 1], [seed], result.parameters, result.samples[i:i + 1])
        write_gif(one, out / f"{seed:06d}.gif")
    return out

