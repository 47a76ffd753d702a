"""Video metrics: per-frame FD, a Frechet video distance on the project's own small video network, temporal
consistency (warping error with optical flow), and motion adherence (a trained classifier of motion direction).

- Per-frame FD: the Frechet distance (Heusel et al. 2017) of single frames' features from an image feature
  extractor of `noisecraft.eval.features` ("mnist" by default), all frames of all clips pooled.
- FVD-nc: the Frechet distance of clip features of `MotionNet`, a small 3-D convolutional network this project
  trains on the generated datasets' exact labels (motion direction, and the digit / shape and colour), in the
  spirit of FVD (Unterthiner et al. 2018, which uses an I3D network trained on Kinetics). The numbers are NOT
  comparable to published FVD: the network, its training data and the clips are ours.
- Warping error (as in Lai et al. 2018, "Learning blind video temporal consistency", eq. 6, without the occlusion
  mask): for each pair of consecutive frames, the dense optical flow from frame t+1 to frame t (Farneback 2003,
  OpenCV's calcOpticalFlowFarneback) warps frame t onto frame t+1; the error is the mean absolute difference of
  the warped and the actual frame (grey values in [0, 1]), averaged over pairs and clips. Frames drawn
  independently of each other score high; a temporally consistent clip scores low.
- Motion adherence: the fraction of clips whose direction, as `MotionNet` classifies it, is the prompt's.
  `centroid_direction` is an untrained cross-check for one-object clips: the sign of the brightness centroid's
  displacement over the first half of the clip.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from noisecraft.data.video import DIRECTIONS
from noisecraft.errors import DataError

MOTION_NET_VERSION = "1"
HEADS = {"moving-mnist": {"direction": 4, "digit": 10},
         "moving-scenes": {"direction": 4, "shape": 3, "colour": 4}}


def _check_clips(clips: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(clips, torch.Tensor) or clips.ndim != 5 or len(clips) < 2:
        raise DataError(f"{what}: expected at least 2 clips (N, C, T, H, W), got "
                        f"{getattr(clips, 'shape', type(clips).__name__)}")
    return clips.float().clamp(-1, 1)  # samples, like images, are shown clipped to [-1, 1]


def check_same_shape(a: torch.Tensor, b: torch.Tensor) -> None:
    """Generated and reference clips must have the same (C, T, H, W): DataError naming both."""
    if tuple(a.shape[1:]) != tuple(b.shape[1:]):
        raise DataError(f"clips of shape {tuple(a.shape[1:])} compared with reference clips of shape "
                        f"{tuple(b.shape[1:])}; expected the same (C, T, H, W)")


# ------------------------------------------------------------------------------------ per-frame FD
def per_frame_fd(generated: torch.Tensor, reference: torch.Tensor, features: str = "mnist") -> float:
    """FD of the frames of two sets of clips, each frame an image (module docstring)."""
    from noisecraft.eval.features import get_extractor
    from noisecraft.eval.metrics import fd

    generated, reference = _check_clips(generated, "generated"), _check_clips(reference, "reference")
    check_same_shape(generated, reference)
    ex = get_extractor(features)
    return fd(ex(frames_of(generated)), ex(frames_of(reference)))


def frames_of(clips: torch.Tensor) -> torch.Tensor:
    """(N, C, T, H, W) -> (N T, C, H, W)."""
    N, C, T, H, W = clips.shape
    return clips.transpose(1, 2).reshape(N * T, C, H, W)


# ------------------------------------------------------------------------------- the video network
class MotionNet(nn.Module):
    """A small 3-D CNN: three (conv 3x3x3, GroupNorm, SiLU, 2x spatial pooling) stages of 16/32/64 channels, then
    global average pooling -> 64 + 32 + 16 features (every stage pooled), and one linear head per label."""

    def __init__(self, in_channels: int, heads: dict[str, int]) -> None:
        super().__init__()
        widths, c = (16, 32, 64), in_channels
        self.stages = nn.ModuleList()
        for w in widths:
            self.stages.append(nn.Sequential(nn.Conv3d(c, w, 3, padding=1), nn.GroupNorm(4, w), nn.SiLU()))
            c = w
        self.dim = sum(widths)
        self.heads = nn.ModuleDict({k: nn.Linear(self.dim, n) for k, n in heads.items()})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []
        for stage in self.stages:
            x = stage(x)
            pooled.append(x.mean(dim=(2, 3, 4)))
            x = F.avg_pool3d(x, (1, 2, 2))
        return torch.cat(pooled[::-1], dim=1)  # (N, 112)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        return {k: head(f) for k, head in self.heads.items()}


@dataclass(frozen=True)
class MotionNetSpec:
    """Which data a MotionNet is trained on (its cache key)."""

    dataset: str
    frames: int
    resolution: int
    channels: int
    count: int = 2000
    steps: int = 300
    seed: int = 0

    @property
    def key(self) -> str:
        return (f"motion-v{MOTION_NET_VERSION}-{self.dataset}-{self.frames}f-{self.resolution}px-{self.channels}c-"
                f"{self.count}-{self.steps}-{self.seed}")


def dataset_labels(ds) -> dict[str, torch.Tensor]:
    """The labels MotionNet learns for a generated video dataset."""
    a = ds.attributes
    if ds.name == "moving-mnist":
        return {"direction": a["direction"], "digit": ds.labels}
    return {"direction": a["direction"], "shape": a["shape"], "colour": a["colour"]}


def train_motion_net(spec: MotionNetSpec, *, progress: bool = False) -> MotionNet:
    """Train a MotionNet on `spec.count` training clips for `spec.steps` Adam steps (batch 32, seeded)."""
    from noisecraft.data import load_dataset

    if spec.dataset not in HEADS:
        raise DataError(f"MotionNet trains on {', '.join(HEADS)}; got dataset {spec.dataset!r}")
    ds = load_dataset(spec.dataset, split="train", count=spec.count, frames=spec.frames,
                      resolution=spec.resolution, channels=spec.channels, seed=spec.seed)
    labels = dataset_labels(ds)
    gen = torch.Generator().manual_seed(spec.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        net = MotionNet(spec.channels, HEADS[spec.dataset])
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for step in range(spec.steps):
        idx = torch.randint(len(ds), (32,), generator=gen)
        out = net(ds.images[idx])
        loss = sum(F.cross_entropy(out[k], labels[k][idx]) for k in out)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress and (step + 1) % 50 == 0:
            print(f"motion net step {step + 1}: loss {float(loss):.3f}", flush=True)
    return net.eval().requires_grad_(False)


def motion_net(spec: MotionNetSpec, *, cache_dir=None, progress: bool = False) -> MotionNet:
    """The MotionNet of `spec`, trained once and cached ($NOISECRAFT_CACHE/video_eval/<key>.safetensors)."""
    from safetensors.torch import load_file, save_file

    from noisecraft.paths import cache_dir as default_cache

    path = Path(cache_dir or default_cache() / "video_eval") / f"{spec.key}.safetensors"
    if path.is_file():
        net = MotionNet(spec.channels, HEADS[spec.dataset])
        net.load_state_dict(load_file(str(path)))
        return net.eval().requires_grad_(False)
    net = train_motion_net(spec, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return net


@torch.no_grad()
def _batched(fn, clips: torch.Tensor, batch: int = 64) -> torch.Tensor:
    return torch.cat([fn(clips[i:i + batch]) for i in range(0, len(clips), batch)])


def fvd_nc(generated: torch.Tensor, reference: torch.Tensor, net: MotionNet) -> float:
    """Frechet distance of MotionNet clip features (module docstring: not comparable to published FVD)."""
    from noisecraft.eval.metrics import fd

    generated, reference = _check_clips(generated, "generated"), _check_clips(reference, "reference")
    check_same_shape(generated, reference)
    return fd(_batched(net.features, generated).double().numpy(), _batched(net.features, reference).double().numpy())


def predicted(net: MotionNet, clips: torch.Tensor, head: str = "direction") -> torch.Tensor:
    """(N,) the class MotionNet's `head` gives each clip."""
    return _batched(lambda x: net(x)[head].argmax(1), _check_clips(clips, "clips"))


def motion_adherence(net: MotionNet, clips: torch.Tensor, directions: torch.Tensor) -> float:
    """Fraction of clips whose classified direction is the asked one (directions: (N,) indices into DIRECTIONS)."""
    return float((predicted(net, clips) == directions.to(torch.int64)).float().mean())


def centroid_direction(clips: torch.Tensor) -> torch.Tensor:
    """(N,) direction index of each clip's brightness-centroid displacement between frame 0 and frame T // 2 (the
    larger of the x and y components decides), an untrained check for one-object clips on black."""
    clips = _check_clips(clips, "clips")
    w = (clips.mean(1) + 1).clamp_min(0)  # (N, T, H, W) brightness >= 0
    H, W = w.shape[-2:]
    ys, xs = torch.arange(H, dtype=w.dtype), torch.arange(W, dtype=w.dtype)
    mass = w.sum((-1, -2)).clamp_min(1e-6)
    cx, cy = (w.sum(-2) * xs).sum(-1) / mass, (w.sum(-1) * ys).sum(-1) / mass  # (N, T)
    half = clips.shape[2] // 2
    dx, dy = cx[:, half] - cx[:, 0], cy[:, half] - cy[:, 0]
    horizontal = dx.abs() >= dy.abs()
    out = torch.where(horizontal, torch.where(dx < 0, 0, 1), torch.where(dy < 0, 2, 3))
    return out.to(torch.int64)


# --------------------------------------------------------------------------------- temporal consistency
def warping_error(clips: torch.Tensor) -> float:
    """Mean warping error of consecutive frames (module docstring), grey values in [0, 1]."""
    import cv2

    clips = _check_clips(clips, "clips")
    grey = ((clips.mean(1).clamp(-1, 1) + 1) / 2).numpy().astype(np.float32)  # (N, T, H, W)
    H, W = grey.shape[-2:]
    gx, gy = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    errors = []
    for clip in grey:
        u8 = (clip * 255).round().astype(np.uint8)
        for t in range(len(clip) - 1):
            flow = cv2.calcOpticalFlowFarneback(u8[t + 1], u8[t], None, 0.5, 2, 7, 3, 5, 1.1, 0)  # (H, W, 2)
            warped = cv2.remap(clip[t], gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
            errors.append(float(np.abs(warped - clip[t + 1]).mean()))
    return float(np.mean(errors))


__all__ = ["DIRECTIONS", "MotionNet", "MotionNetSpec", "centroid_direction", "fvd_nc", "motion_adherence",
           "motion_net", "per_frame_fd", "predicted", "warping_error"]
