"""Video data: two generated sets with exact motion ground truth, and a folder of video files.

Every clip is (C, T, H, W) float32 in [-1, 1] (channels first, then time), so a video dataset's `images` are
(N, C, T, H, W) and the schedules, losses and samplers handle them as any other sample.

=================  ============================================================================================
moving-mnist       one MNIST digit (from the bundled mnist set, half the frame side) moving with a constant
                   velocity and bouncing off the frame's walls: `count` clips (default 2000), `frames`
                   (default 8) grey frames of `resolution` (default 32) px. labels = the digit; attributes:
                   "direction" (N,) the initial motion direction (an index into DIRECTIONS), "velocity"
                   (N, 2) px / frame (x right, y down), "position" (N, T, 2) the digit's top-left corner.
moving-scenes      one coloured shape of the `scenes` set (circle / square / triangle, four colours, two sizes)
                   that moves or bounces in one of four directions, captions such as "a red circle moves left"
                   or "a small blue square bounces down" ("bounces": it hits the wall half-way and comes back);
                   RGB, default 8 frames of 32 px, 4000 clips. attributes: "direction", "bounce" (N,) 0/1,
                   "shape", "colour", "size" (N,) (indices into the scenes vocabularies), "position" (N, T, 2)
                   the shape's centre.
moving-mnist-      the frames of moving-mnist's clips as an image dataset (N T, C, H, W), for the image model a
frames             video U-Net is inflated from and the per-frame baseline.
video-folder       the video files under `root` (.mp4, .webm, .mkv, .avi, .mov, .gif; decoded with PyAV): the
                   first `frames` (default 8) frames of each, scaled (short side = resolution, default 32) and
                   centre-cropped; a caption from FILE.txt beside a file when every file has one.
=================  ============================================================================================

Splits: generated clips follow the `scenes` rule (the last 10% of the default count are "test"); digits of
moving-mnist come from the matching split of the mnist set. Everything is a function of the seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from noisecraft.data.base import ImageDataset, convert_channels, resize_images, split_indices, uint8_to_float
from noisecraft.errors import DataError

DIRECTIONS = ("left", "right", "up", "down")
UNIT = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}  # (x, y), y down
DEFAULT_FRAMES = 8
DEFAULT_SIDE = 32
MNIST_CLIPS, SCENE_CLIPS = 2000, 4000
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".gif")
MAX_ANGLE = np.pi / 6  # moving-mnist: the velocity is within 30 degrees of its direction


def _check_frames(frames) -> int:
    frames = DEFAULT_FRAMES if frames is None else frames
    if isinstance(frames, bool) or not isinstance(frames, int | np.integer) or frames < 2:
        raise DataError(f"data.frames must be an integer >= 2 (frames per clip), got {frames!r}")
    return int(frames)


def clip_split(count: int, default: int, split: str) -> np.ndarray:
    """Positions of `split` among `count` generated clips: the last 10% of min(count, default) are "test"."""
    base = split_indices(None, min(count, default), split)
    if count <= default or split == "test":
        return base
    return np.concatenate([base, np.arange(default, count)])


def to_clips(frames_uint8: np.ndarray) -> torch.Tensor:
    """(N, T, H, W, C) uint8 -> (N, C, T, H, W) float32 in [-1, 1]."""
    return uint8_to_float(frames_uint8).permute(0, 4, 1, 2, 3).contiguous()


def resize_clips(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """(N, C, T, H, W) -> (N, C, T, R, R) frame by frame (`data.base.resize_images`)."""
    n, c, t = x.shape[:3]
    frames = x.permute(0, 2, 1, 3, 4).reshape(n * t, c, *x.shape[-2:])  # (N T, C, H, W)
    out = resize_images(frames, resolution)
    return out.reshape(n, t, c, resolution, resolution).permute(0, 2, 1, 3, 4).contiguous()


# ------------------------------------------------------------------------------------------ moving digits
def bounce(p: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Positions p reflected into [lo, hi] (elastic bounces off both walls)."""
    span = hi - lo
    q = np.mod(p - lo, 2 * span)
    return lo + np.where(q > span, 2 * span - q, q)


def digit_track(rng: np.random.Generator, frames: int, side: int, size: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(direction index, velocity (2,), top-left positions (T, 2)) of one digit of `size` px in a `side` frame."""
    d = int(rng.integers(len(DIRECTIONS)))
    base = np.arctan2(UNIT[DIRECTIONS[d]][1], UNIT[DIRECTIONS[d]][0])
    angle = base + rng.uniform(-MAX_ANGLE, MAX_ANGLE)
    speed = rng.uniform(1.5, 2.5) * side / DEFAULT_SIDE
    v = speed * np.array([np.cos(angle), np.sin(angle)])
    start = rng.uniform(0, side - size, size=2)
    t = np.arange(frames)[:, None]
    return d, v, bounce(start + t * v, 0.0, float(side - size))


def render_digit_clip(digit: np.ndarray, positions: np.ndarray, side: int) -> np.ndarray:
    """(T, side, side) uint8 frames with `digit` (s, s) uint8 pasted at the rounded positions (black background)."""
    s = digit.shape[0]
    out = np.zeros((len(positions), side, side), dtype=np.uint8)
    for t, (x, y) in enumerate(np.rint(positions).astype(int)):
        out[t, y:y + s, x:x + s] = np.maximum(out[t, y:y + s, x:x + s], digit)
    return out


def load_moving_mnist(*, root=None, resolution=None, channels=None, split="all", limit=None, seed=0,
                      count=None, frames=None) -> ImageDataset:
    """Moving digits (module table); each clip's digit is drawn uniformly from mnist's matching split."""
    from noisecraft.data.digits import load_mnist

    if root is not None:
        raise DataError(f"dataset 'moving-mnist' is generated; root does not apply, got root={root!r}")
    T, side = _check_frames(frames), DEFAULT_SIDE if resolution is None else resolution
    size = side // 2
    idx = clip_split(MNIST_CLIPS if count is None else count, MNIST_CLIPS, split)[:limit]
    digits_ds = load_mnist(split="train" if split == "train" else ("test" if split == "test" else "all"),
                           resolution=size)
    digits = ((digits_ds.images[:, 0] + 1) * 127.5).round().to(torch.uint8).numpy()  # (n, s, s)
    rng = np.random.default_rng([seed, 1])
    n = int(idx[-1]) + 1 if len(idx) else 0
    clips = np.zeros((len(idx), T, side, side, 1), dtype=np.uint8)
    labels, direction = np.zeros(len(idx), np.int64), np.zeros(len(idx), np.int64)
    velocity, position = np.zeros((len(idx), 2), np.float32), np.zeros((len(idx), T, 2), np.float32)
    keep = {int(j): k for k, j in enumerate(idx)}
    for i in range(n):
        d, v, pos = digit_track(rng, T, side, size)
        j = int(rng.integers(len(digits)))
        k = keep.get(i)
        if k is None:
            continue
        clips[k, ..., 0] = render_digit_clip(digits[j], pos, side)
        labels[k], direction[k], velocity[k], position[k] = int(digits_ds.labels[j]), d, v, pos
    images = to_clips(clips)
    if channels is not None:
        images = convert_channels(images, channels)
    attrs = {"direction": torch.from_numpy(direction), "velocity": torch.from_numpy(velocity),
             "position": torch.from_numpy(position)}
    return ImageDataset("moving-mnist", images, torch.from_numpy(labels), digits_ds.class_names, attributes=attrs)


# ------------------------------------------------------------------------------------------ moving scenes
def scene_caption(obj, direction: str, bounce_: bool, say_size: bool) -> str:
    """'a red circle moves left' or 'a small blue square bounces down'."""
    words = ["a"] + ([obj.size] if say_size else []) + [obj.colour, obj.shape]
    return " ".join(words + ["bounces" if bounce_ else "moves", direction])


def scene_track(rng: np.random.Generator, frames: int, half: float, direction: str, bounce_: bool) -> np.ndarray:
    """(T, 2) centres on the 32-px canvas: constant speed along `direction`; with a bounce, the wall is reached
    half-way through the clip and the shape comes back."""
    lo, hi = 1 + half, 31 - half
    ux, uy = UNIT[direction]
    travel = hi - lo
    speed = travel / max(frames - 1, 1) * (1.6 if bounce_ else 0.9)
    sign = ux + uy  # +1 for right / down, -1 for left / up
    if bounce_:
        start_along = hi - speed * (frames - 1) / 2 if sign > 0 else lo + speed * (frames - 1) / 2
    else:
        start_along = lo if sign > 0 else hi
    along = bounce(start_along + sign * speed * np.arange(frames), lo, hi)
    across = np.full(frames, rng.uniform(lo, hi))
    xy = np.stack([along, across], 1) if ux else np.stack([across, along], 1)
    return xy.astype(np.float32)


def load_moving_scenes(*, root=None, resolution=None, channels=None, split="all", limit=None, seed=0,
                       count=None, frames=None) -> ImageDataset:
    """Moving coloured shapes with motion captions (module table), drawn with the `scenes` renderer."""
    from noisecraft.data import scenes as sc

    if root is not None:
        raise DataError(f"dataset 'moving-scenes' is generated; root does not apply, got root={root!r}")
    T = _check_frames(frames)
    idx = clip_split(SCENE_CLIPS if count is None else count, SCENE_CLIPS, split)[:limit]
    rng = np.random.default_rng([seed, 2])
    keep = {int(j): k for k, j in enumerate(idx)}
    n_out = len(idx)
    clips = np.zeros((n_out, T, sc.SIDE, sc.SIDE, 3), dtype=np.uint8)
    attrs = {k: np.zeros(n_out, np.int64) for k in ("direction", "bounce", "shape", "colour", "size")}
    position = np.zeros((n_out, T, 2), np.float32)
    captions = [""] * n_out
    for i in range(int(idx[-1]) + 1 if n_out else 0):
        obj = sc._random_object(rng)
        d, b, say_size = int(rng.integers(4)), bool(rng.random() < 0.5), bool(rng.random() < 0.5)
        xy = scene_track(rng, T, sc.SIZE_PX[obj.size] / 2, DIRECTIONS[d], b)
        k = keep.get(i)
        if k is None:
            continue
        spec = sc.SceneSpec((obj,))
        clips[k] = np.stack([sc.render(spec, [tuple(p)]) for p in xy])
        captions[k] = scene_caption(obj, DIRECTIONS[d], b, say_size)
        position[k] = xy
        for key, value in (("direction", d), ("bounce", int(b)), ("shape", sc.SHAPES.index(obj.shape)),
                           ("colour", sc.COLOURS.index(obj.colour)), ("size", sc.SIZES.index(obj.size))):
            attrs[key][k] = value
    images = to_clips(clips)
    if resolution is not None and resolution != sc.SIDE:
        images = resize_clips(images, resolution)
        position = position * (resolution / sc.SIDE)
    if channels is not None:
        images = convert_channels(images, channels)
    tensors = {k: torch.from_numpy(v) for k, v in attrs.items()}
    tensors["position"] = torch.from_numpy(position)
    return ImageDataset("moving-scenes", images, captions=tuple(captions), attributes=tensors)


# ------------------------------------------------------------------------------------------ video files
def read_video(path, *, frames: int | None = None) -> np.ndarray:
    """The frames of a video file as (T, H, W, 3) uint8 (PyAV / FFmpeg), the first `frames` of them when given.
    DataError for a missing, empty or undecodable file and for one with fewer than `frames` frames."""
    import av

    path = Path(path)
    if not path.is_file():
        raise DataError(f"video file not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"video file {path} is empty (0 bytes); expected a video PyAV/FFmpeg can decode "
                        f"({', '.join(VIDEO_EXTENSIONS)})")
    out = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path} has no video stream")
            for frame in container.decode(video=0):
                out.append(frame.to_ndarray(format="rgb24"))
                if frames is not None and len(out) >= frames:
                    break
    except DataError:
        raise
    except Exception as e:  # av.error.FFmpegError and friends: not a video we can read
        raise DataError(f"cannot decode video file {path} ({type(e).__name__}: {e}); expected a video "
                        f"PyAV/FFmpeg can decode ({', '.join(VIDEO_EXTENSIONS)})") from None
    if not out:
        raise DataError(f"video file {path} has no decodable frames")
    if frames is not None and len(out) < frames:
        raise DataError(f"video file {path} has {len(out)} frames; expected at least {frames} (data.frames)")
    return np.stack(out)


def load_video_clip(path, *, frames: int | None = None, channels: int = 3) -> torch.Tensor:
    """A video file as one clip (C, T, H, W) in [-1, 1]."""
    clip = to_clips(read_video(path, frames=frames)[None])[0]  # (3, T, H, W)
    return convert_channels(clip[None], channels)[0]


def find_video_files(root) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data.root {str(root)!r} is not a directory")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def load_video_folder(*, root=None, resolution=None, channels=None, split="all", limit=None, seed=0,
                      frames=None) -> ImageDataset:
    """The video files under `root` as clips (module table); captions from FILE.txt when every file has one."""
    if root is None:
        raise DataError("dataset 'video-folder' needs root=<a directory of video files>")
    files = find_video_files(root)
    if not files:
        raise DataError(f"no video files found under {str(root)!r}; allowed extensions (any case): "
                        f"{', '.join(VIDEO_EXTENSIONS)}")
    T, r, c = _check_frames(frames), DEFAULT_SIDE if resolution is None else resolution, channels or 3
    idx = split_indices(None, len(files), split)[:limit]
    clips = []
    for i in idx:
        clip = load_video_clip(files[i], frames=T, channels=c)  # (C, T, H, W)
        clips.append(resize_clips(clip[None], r)[0])
    texts = [files[i].with_suffix(".txt") for i in idx]
    captions = tuple(t.read_text().strip() for t in texts) if all(t.is_file() for t in texts) else None
    return ImageDataset("video-folder", torch.stack(clips), captions=captions)


def load_moving_mnist_frames(*, root=None, resolution=None, channels=None, split="all", limit=None, seed=0,
                             count=None, frames=None) -> ImageDataset:
    """The frames of moving-mnist's clips as images (N T, C, H, W) (labels = the digit), for an image model of
    the same frames: the per-frame baseline of benchmarks/video.md and the image run a video U-Net is inflated
    from. `limit` counts clips."""
    clips = load_moving_mnist(root=root, resolution=resolution, channels=channels, split=split, limit=limit,
                              seed=seed, count=count, frames=frames)
    x = clips.images  # (N, C, T, H, W)
    T = x.shape[2]
    images = x.transpose(1, 2).reshape(-1, *x.shape[1:2], *x.shape[3:]).contiguous()  # (N T, C, H, W)
    return ImageDataset("moving-mnist-frames", images, clips.labels.repeat_interleave(T), clips.class_names)


VIDEO_DATASETS = {"moving-mnist": load_moving_mnist, "moving-mnist-frames": load_moving_mnist_frames,
                  "moving-scenes": load_moving_scenes, "video-folder": load_video_folder}


def check_clip(clip: torch.Tensor, expected: tuple[int, ...], what: str = "video") -> None:
    """DataError unless clip (C, T, H, W) has the shape a model was trained on, naming the frames and size."""
    C, T, H, W = expected
    if clip.ndim != 4 or tuple(clip.shape) != tuple(expected):
        got = tuple(clip.shape)
        detail = (f"{got[1]} frames of {got[2]}x{got[3]} with {got[0]} channel(s)" if clip.ndim == 4 else
                  f"shape {got}")
        raise DataError(f"{what}: the model was trained on {T} frames of {H}x{W} with {C} channel(s); got {detail}")
