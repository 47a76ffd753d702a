"""The condition protocol, and the set of a run's conditions that builds `cond` for training and sampling.

A condition (a "provider") is one thing a model can be conditioned on - a class label, a text prompt, a
layout, a mask. It says

- which network inputs it feeds (`network_fields`: the widths it sets on the network config),
- how its part of `cond` is built from a training batch (`setup` once, then `from_batch(idx)`, or
  `from_images(idx, x0, generator)` for a condition made from the batch's images),
- how it is built from a user's request at sampling time (`load` once, then `from_request`),
- and what "dropped" means for classifier-free guidance (`null`; Ho & Salimans 2022, Algorithm 1), and
  which condition the guided sampler moves away from (`unconditional`, e.g. a negative prompt).

Networks read a few generic inputs (`noisecraft.models.conditioning`), and any condition may feed them:

    "concat"                    (B, C_cat, *S)  channels concatenated to x: masks, low-res images, structure and
                                                layout maps; the channels of all conditions are joined in order
    "text_tokens", "text_mask"  (B, T, D), (B, T) tokens read by cross-attention
    "text_pooled", "vector"     (B, D)          vectors added to the time embedding ("vector": the vectors of all
                                                conditions joined in order)
    "class_labels"              (B,)            a class embedding added to the time embedding (null = num_classes)

so a new condition is one class and a `CONDITIONS` entry, not an edit of the trainer, the networks or the
pipeline. `ConditionSet` draws condition dropout once per sample (so the conditions of a sample are dropped
together) and merges the conditions' dicts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from noisecraft.errors import ConfigError, NoisecraftError, unknown_name

PIXELS = "pixels"  # a latent run's dataset attribute holding its pixel images (autoencoder.latents.encode_dataset)
JOINED = {"concat": 1, "vector": 1}  # keys several conditions may feed: joined along this dimension
SUMMED_FIELDS = {"concat_channels", "vector_dim"}  # network fields that add up over conditions


class Condition:
    """One condition of a run (module docstring). Subclasses set `name` and override what they need.

    Every method gets tensors on `self.device` (set by `setup` / `load`). Batch-first throughout: a value may
    have batch 1 (the same for every image) or the full batch."""

    name: str = ""
    guidable: bool = True  # classifier-free guidance can move towards / away from this condition; a condition that
                           # is not guidable (an inpainting mask, a control map) is in both branches of guidance, so
                           # training never drops it (condition dropout drops the guidable conditions only)
    pixel_space: bool = False  # made from the images in pixel space (an edge map, a low-resolution copy): in a latent
                               # run, `from_images` gets the batch's pixel images, not its latents
    image_shape: tuple[int, ...] | None = None  # one image's shape in pixel space (a latent run: the decoded image's,
                                                # else the sample shape); set by ConditionSet.setup / load
    required: bool = False  # a request must give it: its null value is never a sensible sample (a super-resolution
                            # model's low-resolution image); a request without it is an error naming `describe()`

    def __init__(self, config) -> None:
        self.config = config
        self.device = torch.device("cpu")

    # ---------------------------------------------------------------------------------- the network
    def network_fields(self) -> dict[str, int]:
        """Widths this condition sets on the network config, e.g. {"concat_channels": 1}."""
        return {}

    def wrap_network(self, net: torch.nn.Module) -> torch.nn.Module:
        """A condition that runs inside the network (a trainable text encoder) wraps it; others return it."""
        return net

    # ----------------------------------------------------------------------------------- training
    def setup(self, dataset, net: torch.nn.Module, device, progress: bool = False) -> None:
        """Read what the training batches need from the dataset (e.g. encode its captions once)."""
        self.device = torch.device(device)

    def prepare(self, run_dir, progress: bool = False) -> None:
        """Once per run, on the main process, before the first step: fit and save what sampling will need
        (e.g. a layout planner) in run_dir. Kept when a run resumes."""

    def from_batch(self, idx: Tensor) -> dict:
        """The cond entries of the dataset items idx (B,)."""
        raise NotImplementedError

    def from_images(self, idx: Tensor, x0: Tensor, generator: torch.Generator) -> dict:
        """The cond entries of training batch idx whose images, as the network sees them (after augmentation;
        latents for a latent run), are x0 (B, *data_shape). A condition made from the images themselves (a mask
        and the masked image, a low-resolution copy, an edge map) overrides this and draws its randomness from
        `generator`, the step's, so a resumed run draws the same. Default: `from_batch(idx)`."""
        return self.from_batch(idx)

    def null(self, n: int) -> dict:
        """The null ("dropped") condition, batch n (or 1, broadcast): what a training sample gets with
        probability conditioning.cond_dropout, and the unconditional model at sampling time."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------------- sampling
    def load(self, run_dir, net: torch.nn.Module, device, data_shape: tuple) -> None:
        """Read what `prepare` wrote; called when a run is loaded for sampling."""
        self.device = torch.device(device)

    def given(self, request) -> bool:
        """Whether the request gives this condition a value."""
        return request.conditions is not None and self.name in request.conditions

    def check_request(self, request) -> None:
        """Raise NoisecraftError for a request value this condition cannot use."""

    def from_request(self, request, num: int, seed: int | None) -> dict:
        """The cond entries for `num` images of a request that gives this condition (`given`); batch 1 or num.
        seed: image i's randomness derives from seed + i (None: the condition's deterministic choice)."""
        raise NotImplementedError

    def unconditional(self, request) -> dict:
        """The condition classifier-free guidance moves away from (batch 1): the null condition by default."""
        return self.null(1)

    def preview(self, dataset, num: int):
        """The request value the preview grid after training shows for `num` images of `dataset` (e.g. the
        low-resolution copies of its first images), or None (the request leaves this condition out)."""
        return None

    def project(self, x: Tensor, cond: dict) -> Tensor:
        """x confined to the subspace this condition keeps samples in (the training noise, the initial draw and
        every denoiser input and estimate of generation go through it), given the full cond; default: x. A
        molecule run's atoms condition projects onto zero centre of mass over the real atoms
        (`noisecraft.conditions.atoms`)."""
        return x

    def describe(self) -> str:
        """How a user gives this condition (for error messages), e.g. 'use --class 0..9'."""
        return f"condition {self.name!r} (request.conditions[{self.name!r}])"


# ---------------------------------------------------------------------------------------- registry
CONDITIONS: dict[str, Callable[[Any], Condition]] = {}  # name -> class taking the run config


def register(name: str):
    """Class decorator: make a Condition available by name to `conditioning.conditions` in run configs."""
    def add(cls):
        cls.name = name
        CONDITIONS[name] = cls
        return cls

    return add


def pixel_images(dataset) -> Tensor:
    """A dataset's pixel images: a latent run's kept pixels (attributes[PIXELS]), else its images."""
    pixels = (dataset.attributes or {}).get(PIXELS)
    return dataset.images if pixels is None else pixels


def where_dropped(values: dict, null: dict, drop: Tensor) -> dict:
    """values with the samples where drop (B,) is True replaced by the null condition (batch 1 or B)."""
    out = {}
    for key, v in values.items():
        n = null[key].to(v.device)
        mask = drop.to(v.device).reshape(-1, *[1] * (v.ndim - 1))
        out[key] = torch.where(mask, n, v)
    return out


def merge(parts: list[tuple[str, dict]], batch: int) -> dict:
    """One cond dict from the conditions' parts: "concat" and "vector" joined in order, others unique."""
    out: dict = {}
    for name, part in parts:
        for key, v in part.items():
            if key not in out:
                out[key] = v
            elif key in JOINED:
                a, b = out[key], v
                if a.shape[0] != b.shape[0]:  # batch 1 next to batch B: broadcast (B may exceed `batch`: an
                    n = max(batch, a.shape[0], b.shape[0])  # unconditional side keeps a per-image map, as low-res)
                    a, b = a.expand(n, *a.shape[1:]), b.expand(n, *b.shape[1:])
                out[key] = torch.cat([a, b], dim=JOINED[key])
            else:
                raise NoisecraftError(f"cond[{key!r}] is produced by two conditions (the second is {name!r}); "
                                      f"only {', '.join(JOINED)} can be joined")
    return out


class ConditionSet:
    """The conditions of a run, in order, with the run's condition dropout probability."""

    def __init__(self, conditions: list[Condition], cond_dropout: float = 0.0) -> None:
        names = [c.name for c in conditions]
        if len(set(names)) != len(names):
            raise ConfigError(f"conditions named twice: {names}")
        self.conditions, self.p = list(conditions), float(cond_dropout)

    def __iter__(self):
        return iter(self.conditions)

    def __bool__(self) -> bool:
        return bool(self.conditions)

    def get(self, name: str) -> Condition | None:
        return next((c for c in self.conditions if c.name == name), None)

    # ---------------------------------------------------------------------------------- the network
    def network_fields(self) -> dict[str, int]:
        """The network config fields all conditions set (concat channels and vector widths add up)."""
        out: dict[str, int] = {}
        for c in self.conditions:
            for key, value in c.network_fields().items():
                if key in out and key not in SUMMED_FIELDS:
                    raise ConfigError(f"network field {key} is set by two conditions (the second is {c.name!r})")
                out[key] = out.get(key, 0) + value if key in SUMMED_FIELDS else value
        return out

    def wrap_network(self, net: torch.nn.Module) -> torch.nn.Module:
        for c in self.conditions:
            net = c.wrap_network(net)
        return net

    # ----------------------------------------------------------------------------------- training
    def setup(self, dataset, net, device, progress: bool = False) -> None:
        """Set every condition up for training; `image_shape` is the pixel images' (a latent run's dataset keeps
        them as attributes["pixels"] when a condition is `pixel_space`)."""
        shape = tuple(pixel_images(dataset).shape[1:])
        for c in self.conditions:
            c.image_shape = shape
            c.setup(dataset, net, device, progress)

    @property
    def pixel_space(self) -> bool:
        """Whether a condition is made from pixel images (a latent run then keeps its dataset's pixels)."""
        return any(c.pixel_space for c in self.conditions)

    def prepare(self, run_dir, progress: bool = False) -> None:
        for c in self.conditions:
            c.prepare(run_dir, progress)

    def batch(self, idx: Tensor, gen: torch.Generator, x0: Tensor | None = None,
              pixels: Tensor | None = None) -> dict | None:
        """The cond of training batch idx (images x0, for conditions made from them; a latent run's pixel images
        `pixels`, for conditions made in pixel space): each sample's conditions are dropped together with
        probability p, one draw per sample from the step's generator (so a resumed run draws the same), then each
        condition draws what it needs from the same generator, in order."""
        if not self.conditions:
            return None
        drop = None
        if self.p > 0:
            drop = (torch.rand(len(idx), generator=gen) < self.p).to(idx.device)
        parts = []
        for c in self.conditions:
            images = pixels if c.pixel_space and pixels is not None else x0
            values = c.from_batch(idx) if images is None else c.from_images(idx, images, gen)
            dropped = drop is not None and c.guidable  # a map guidance does not move (a mask, a control map) stays
            parts.append((c.name, where_dropped(values, c.null(len(idx)), drop) if dropped else values))
        return merge(parts, len(idx))

    # ----------------------------------------------------------------------------------- sampling
    def load(self, run_dir, net, device, data_shape: tuple, image_shape: tuple | None = None) -> None:
        """Load every condition for sampling; image_shape: one image's shape in pixel space (a latent run's decoded
        image; None: data_shape)."""
        for c in self.conditions:
            c.image_shape = tuple(image_shape or data_shape)
            c.load(run_dir, net, device, data_shape)

    def check_request(self, request) -> None:
        """Every condition the request names exists, and each given value is usable."""
        names = [c.name for c in self.conditions]
        for name in request.conditions or {}:
            if name not in names:
                raise unknown_name("condition", name, names or ["(none: this model is unconditional)"])
        for c in self.conditions:
            if c.required and not c.given(request):
                raise NoisecraftError(f"this model needs condition {c.name!r}: it is {c.describe()}")
            c.check_request(request)

    def preview(self, dataset, num: int) -> dict:
        """{name: value} of the conditions that give a preview value for num images of dataset (`Condition.preview`)."""
        values = {c.name: c.preview(dataset, num) for c in self.conditions}
        return {name: v for name, v in values.items() if v is not None}

    def request(self, request, num: int, seed: int | None = None) -> tuple[dict | None, dict | None]:
        """(cond for num images, the unconditional side with batch 1) of a request; a condition the request does
        not give takes its null value (the unconditional model for that condition)."""
        if not self.conditions:
            return None, None
        cond = [(c.name, c.from_request(request, num, seed) if c.given(request) else c.null(1))
                for c in self.conditions]
        uncond = [(c.name, c.unconditional(request)) for c in self.conditions]
        return merge(cond, num), merge(uncond, 1)

    @property
    def projects(self) -> bool:
        """Whether a condition confines the samples to a subspace (overrides `Condition.project`)."""
        return any(type(c).project is not Condition.project for c in self.conditions)

    def project(self, x: Tensor, cond: dict | None) -> Tensor:
        """x through every condition's `project`, in order (x itself when none projects)."""
        for c in self.conditions:
            if type(c).project is not Condition.project:
                x = c.project(x, cond)
        return x

    def describe(self) -> str:
        return "; ".join(c.describe() for c in self.conditions)
