"""Structure control: a ControlNet (Zhang et al. 2023; `noisecraft.models.controlnet`) trained on top of a frozen
base run, steered at sampling time by a control map and a conditioning scale.

    noisecraft train --preset mnist-control-canny --out runs/ctrl conditioning.control_base=runs/m
    run = noisecraft.load("runs/ctrl")
    generate(run, Request(conditions={"control": Control(edges, scale=0.8)}))     # or the bare map (scale 1)

The condition (`conditioning.conditions=["control"]`) wraps the run's U-Net as the frozen base of a
`ControlledUNet`. In training its `setup` loads the base run's EMA weights (`conditioning.control_base`) into the
base, copies them into the ControlNet's encoder (the paper's initialisation) and freezes the base, so the trainer
optimises, averages and clips only the ControlNet. The control run's own checkpoint holds both halves, so it samples
without the base run. The run's config must be the base's (network, diffusion, data, text, conditions), checked
field by field at setup.

Map types (`conditioning.control_map`), computed from the training images as the network sees them (after
augmentation) in `from_images`, and from any image with `control_map(kind, images)`:

    canny     Canny edges (Canny 1986) of the grey image, `skimage.feature.canny` with Gaussian
              sigma `conditioning.control_canny_sigma`, hysteresis thresholds 0.1 / 0.2 of the [0, 1] range
    scribble  the one-pixel skeleton (Zhang & Suen 1984, `skimage.morphology.skeletonize`) of the image's strokes
              (grey image thresholded by Otsu's method): a clean line drawing of where the strokes run, standing
              in for the user scribbles of the paper's Sec. 4 (a user draws centre lines, not outlines)

Maps are one channel in {0, 1}, of the image's size; in a latent run too (`pixel_space`: the maps are made from the
pixel images, and the ControlNet's map encoder downsamples them by `conditioning.control_factor`, the autoencoder's
factor). Classifier-free guidance: the control is not guided
(`guidable = False`), the unconditional side gets the same map and scale (as the paper's CFG, Sec. 3.4); the null
control (nothing given, or a sample dropped by condition dropout) is scale 0, which is exactly the base model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from noisecraft.conditions.base import Condition, register
from noisecraft.errors import ConfigError, NoisecraftError

MAP_KINDS = ("canny", "scribble")  # conditioning.control_map values
MAP_CHANNELS = 1
_CANNY_THRESHOLDS = (0.1, 0.2)  # hysteresis thresholds on the gradient of the [0, 1] grey image


@dataclass(frozen=True)
class Control:
    """A request's control: the map ((H, W), (1, H, W) or (1 or num, 1, H, W), values in [0, 1]) and the
    conditioning scale s >= 0 multiplying the ControlNet's residuals (0: the base model, 1: as trained; None: the
    run's conditioning.control_scale)."""

    map: Tensor
    scale: float | None = 1.0


def _grey01(images: Tensor) -> np.ndarray:
    """(B, C, H, W) images in [-1, 1] -> (B, H, W) float64 grey in [0, 1]."""
    x = images.detach().float().cpu().clamp(-1, 1)
    return ((x.mean(dim=1) + 1) / 2).numpy().astype(np.float64)


def canny_map(images: Tensor, sigma: float = 1.0) -> Tensor:
    """Canny edge maps (B, 1, H, W) in {0, 1} of images (B, C, H, W) in [-1, 1] (module docstring)."""
    from skimage.feature import canny

    low, high = _CANNY_THRESHOLDS
    maps = [canny(g, sigma=sigma, low_threshold=low, high_threshold=high) for g in _grey01(images)]
    return torch.from_numpy(np.stack(maps)[:, None].astype(np.float32))


def scribble_map(images: Tensor) -> Tensor:
    """Stroke skeletons (B, 1, H, W) in {0, 1} of images (B, C, H, W) in [-1, 1] (module docstring). An image
    of one grey level has no strokes: an empty map."""
    from skimage.filters import threshold_otsu
    from skimage.morphology import skeletonize

    maps = []
    for g in _grey01(images):
        if g.max() - g.min() < 1e-6:
            maps.append(np.zeros(g.shape, dtype=bool))
            continue
        maps.append(skeletonize(g > threshold_otsu(g)))
    return torch.from_numpy(np.stack(maps)[:, None].astype(np.float32))


def control_map(kind: str, images: Tensor, *, canny_sigma: float = 1.0) -> Tensor:
    """The control maps of `kind` (MAP_KINDS) of images (B, C, H, W) in [-1, 1]: (B, 1, H, W) in {0, 1}."""
    if kind == "canny":
        return canny_map(images, canny_sigma)
    if kind == "scribble":
        return scribble_map(images)
    raise ConfigError(f"unknown control map {kind!r}; allowed: {', '.join(MAP_KINDS)}")


def check_scale(scale) -> float:
    """The conditioning scale as a float; NoisecraftError unless it is a finite real number >= 0."""
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale) or scale < 0:
        raise NoisecraftError(f"control scale must be a finite number >= 0 (0 = the base model, 1 = as trained); "
                              f"got {scale!r}")
    return float(scale)


# the run-config sections a control run must share with its base run (network: all fields but channels_last)
_SHARED = ("model", "network", "diffusion", "text")
_SHARED_DATA = ("dataset", "root", "split", "resolution", "autoencoder")
_IGNORED_NETWORK = ("channels_last",)


def config_differences(base: dict, run: dict) -> list[str]:
    """'section.field: base X, this run Y' for every field the ControlNet run must take from its base run."""
    out = []

    def compare(prefix: str, a, b, ignore=()):
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if key not in ignore:
                    compare(f"{prefix}.{key}", a.get(key), b.get(key))
        elif a != b:
            out.append(f"{prefix}={_fmt(a)} (this run: {_fmt(b)})")

    for section in _SHARED:
        compare(section, base.get(section), run.get(section), _IGNORED_NETWORK if section == "network" else ())
    for key in _SHARED_DATA:
        compare(f"data.{key}", (base.get("data") or {}).get(key), (run.get("data") or {}).get(key))
    base_conds = [c for c in (base.get("conditioning") or {}).get("conditions", []) if c != "control"]
    run_conds = [c for c in (run.get("conditioning") or {}).get("conditions", []) if c != "control"]
    if base_conds != run_conds:
        out.append(f"conditioning.conditions={base_conds + ['control']} (this run: {run_conds + ['control']})")
    for key in ("layout", "text_tokens", "text_pooled"):
        compare(f"conditioning.{key}", (base.get("conditioning") or {}).get(key),
                (run.get("conditioning") or {}).get(key))
    return out


def _fmt(v) -> str:
    import json

    return json.dumps(v) if not isinstance(v, str) else v


@register("control")
class ControlCondition(Condition):
    """The control map of a ControlNet run (module docstring); request value: a map tensor or a `Control`."""

    guidable = False  # the map goes to both sides of classifier-free guidance
    map_channels = MAP_CHANNELS
    pixel_space = True  # maps of the pixel images, also in a latent run (the map encoder downsamples them)

    def __init__(self, config) -> None:
        super().__init__(config)
        c = config.conditioning
        self.kind, self.base_path, self.default_scale = c.control_map, c.control_base, c.control_scale
        self.canny_sigma, self.factor = c.control_canny_sigma, c.control_factor
        self.size: tuple[int, ...] | None = None  # the map's (the pixel images') spatial size

    # ---------------------------------------------------------------------------------- the network
    def wrap_network(self, net):
        from noisecraft.models.controlnet import ControlledUNet, ControlNet
        from noisecraft.models.unet import UNet

        if not isinstance(net, UNet):
            raise ConfigError(f"conditioning.conditions: 'control' (a ControlNet) needs model = 'unet'; this run's "
                              f"network is {type(net).__name__} (model {self.config.model!r})")
        return ControlledUNet(net, ControlNet(net, MAP_CHANNELS, factor=self.factor))

    # ----------------------------------------------------------------------------------- training
    def setup(self, dataset, net, device, progress: bool = False) -> None:
        super().setup(dataset, net, device, progress)
        self.size = tuple(self.image_shape[1:])
        self._check_factor(tuple(dataset.images.shape[2:]))
        self._load_base(net)

    def _check_factor(self, input_size: tuple[int, ...]) -> None:
        """The map (image) size is control_factor times the network input's (ConfigError naming the value)."""
        if any(m != s * self.factor for m, s in zip(self.size, input_size)):
            what = "the autoencoder's factor" if self.config.data.autoencoder else "1 in pixel space"
            ratios = {m // s if m % s == 0 else 0 for m, s in zip(self.size, input_size)}
            want = f"{ratios.pop()}" if len(ratios) == 1 and 0 not in ratios else "(none fits)"
            raise ConfigError(f"conditioning.control_factor={self.factor}, but the maps are "
                              f"{'x'.join(map(str, self.size))} and the network input "
                              f"{'x'.join(map(str, input_size))}: set conditioning.control_factor={want} ({what})")

    def _load_base(self, net) -> None:
        """Load the base run's EMA weights into net.base, copy them into the ControlNet, freeze the base."""
        from noisecraft.checkpoint import load_checkpoint
        from noisecraft.config import to_dict
        from noisecraft.errors import CheckpointError

        if not self.base_path:
            raise ConfigError("conditioning.control_base: a ControlNet trains on a frozen base run; set "
                              "conditioning.control_base=RUN_DIR (e.g. a run of --preset mnist or mnist-class)")
        try:
            ckpt = load_checkpoint(self.base_path)
        except CheckpointError as e:
            raise ConfigError(f"conditioning.control_base={self.base_path!r}: not a readable base run: {e}") from None
        if "control" in (ckpt.config.get("conditioning") or {}).get("conditions", []):
            raise ConfigError(f"conditioning.control_base={self.base_path!r} is itself a ControlNet run; give the "
                              "run it was trained on (a plain U-Net run)")
        diffs = config_differences(_base_config(ckpt), to_dict(self.config))
        if diffs:
            raise ConfigError(f"conditioning.control_base={self.base_path!r}: this run must have the base run's "
                              f"network, diffusion and data; set: {'; '.join(diffs)}")
        weights = ckpt.ema or ckpt.model
        try:
            net.base.load_state_dict(weights, strict=True)
        except RuntimeError as e:
            raise ConfigError(f"conditioning.control_base={self.base_path!r}: its weights do not fit: {e}") from None
        net.control.copy_from(net.base)
        net.base.requires_grad_(False)

    def from_images(self, idx: Tensor, x0: Tensor, generator: torch.Generator) -> dict:
        maps = control_map(self.kind, x0, canny_sigma=self.canny_sigma).to(self.device)
        return {"control": maps, "control_scale": torch.ones(len(idx), device=self.device)}

    def from_batch(self, idx: Tensor) -> dict:
        raise NoisecraftError("the control condition is made from the batch's images (from_images)")

    def null(self, n: int) -> dict:
        """No control: scale 0, exactly the base model (the map is then not read)."""
        return {"control": torch.zeros(1, self.map_channels, *self.size, device=self.device),
                "control_scale": torch.zeros(1, device=self.device)}

    # ----------------------------------------------------------------------------------- sampling
    def load(self, run_dir, net, device, data_shape: tuple) -> None:
        super().load(run_dir, net, device, data_shape)
        self.size = tuple(self.image_shape[1:])
        self._check_factor(tuple(data_shape[1:]))

    def _value(self, request) -> tuple[Tensor, float]:
        """(map (1 or n, 1, *S) float, scale) of a request, checked (NoisecraftError naming the expected)."""
        value = request.conditions[self.name]
        m, scale = (value.map, value.scale) if isinstance(value, Control) else (value, None)
        scale = self.default_scale if scale is None else scale
        scale = check_scale(scale)
        size, dims, C = "x".join(map(str, self.size)), ", ".join(map(str, self.size)), self.map_channels
        channels = "1" if C == 1 else f"1 or {C}"
        expected = (f"a control map of this model's image size {size}: a tensor of shape ({dims}), ({channels}, "
                    f"{dims}) or (1 or num, {channels}, {dims}) with values in [0, 1] ({self.kind} map)")
        if not isinstance(m, Tensor):
            raise NoisecraftError(f"control: expected {expected}; got {type(m).__name__}")
        if m.ndim == len(self.size):
            m = m[None, None]
        elif m.ndim == len(self.size) + 1:
            m = m[None]
        ok = m.ndim == len(self.size) + 2 and m.shape[0] in (1, request.num) and m.shape[1] in (1, C) and \
            tuple(m.shape[2:]) == self.size
        if not ok:
            raise NoisecraftError(f"control: expected {expected}; got shape {tuple(value_shape(value))}")
        m = m.float().expand(-1, C, *self.size)  # a grey map for every channel of a colour-map ControlNet
        if not bool(torch.isfinite(m).all()) or float(m.min()) < 0 or float(m.max()) > 1:
            raise NoisecraftError(f"control: map values must be finite and in [0, 1]; got [{float(m.min()):g}, "
                                  f"{float(m.max()):g}]")
        return m, scale

    def check_request(self, request) -> None:
        if not self.given(request):
            return
        m, _ = self._value(request)
        if m.shape[0] > 1 and request.guided and request.num > request.batch_size:
            raise NoisecraftError(f"control: one map per image with guidance needs every image in one batch: "
                                  f"batch_size >= num ({request.num}), or give one map for all images")

    def from_request(self, request, num: int, seed: int | None) -> dict:
        m, scale = self._value(request)
        return {"control": m.to(self.device), "control_scale": torch.full((1,), scale, device=self.device)}

    def unconditional(self, request) -> dict:
        """The same map and scale as the conditional side (not guided), or no control when none is given."""
        return self.from_request(request, request.num, None) if self.given(request) else self.null(1)

    def preview(self, dataset, num: int):
        """The maps of the dataset's first num images, at the run's conditioning scale."""
        from noisecraft.conditions.base import pixel_images

        images = pixel_images(dataset)[:num]
        if len(images) != num:
            return None
        return Control(control_map(self.kind, images, canny_sigma=self.canny_sigma), scale=None)

    def describe(self) -> str:
        return (f"a ControlNet on {self.kind} maps of size {'x'.join(map(str, self.size or ()))}; use --control "
                f"MAP.png (white = {'edge' if self.kind == 'canny' else 'stroke'}) and --control-scale S >= 0")


def value_shape(value) -> tuple:
    m = value.map if isinstance(value, Control) else value
    return tuple(m.shape) if isinstance(m, Tensor) else ()


def _base_config(ckpt) -> dict:
    """The base run's config as today's fields (migrated, validated), as a dict."""
    from noisecraft.config import from_dict, to_dict
    from noisecraft.runconfig import RunConfig

    try:
        return to_dict(from_dict(RunConfig, ckpt.config))
    except ConfigError as e:
        raise ConfigError(f"conditioning.control_base: {ckpt.path}: its config is invalid: {e}") from None
