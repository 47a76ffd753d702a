"""Prompt adherence on the compositional scene set: does a generated image show what its prompt asked for?

An attribute classifier (a small CNN, `SceneAttributeNet`) is trained on rendered ground truth
(`noisecraft.data.scenes`, by `scripts/train_scene_classifier.py`) and reads an image as a canonical
scene description:

    count   1 or 2 objects
    layout  for two objects: horizontal (side by side) or vertical (one above the other)
    slots   slot 0 = the only object, or the left / upper one; slot 1 = the right / lower one;
            each with colour, shape and size

A prompt is put in the same canonical form ("A right of B" -> horizontal, slot 0 = B, slot 1 = A), so
a caption and an image are compared without caring in which order the caption names the objects.
A prompt is fully satisfied when the count, (for two objects) the layout and order, and every slot's
colour, shape and size all match. `prompt_adherence` returns the fraction of fully satisfied prompts
and the accuracy per attribute. The same scoring with attribute classifiers trained on ground truth is
the approach of GenEval (Ghosh et al. 2023) and T2I-CompBench (Huang et al. 2023), here on a synthetic
set where the classifier itself can be checked (>= 98% on held-out rendered scenes, tests/eval).

The classifier's penultimate layer (256 units) also serves as a feature space for a Frechet distance
on scene images (`scene_features`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from noisecraft.data.scenes import COLOURS, SHAPES, SIDE, SIZES, SceneObject, SceneSpec, parse_caption
from noisecraft.eval.common import EvalError, WeightsError

FORMAT = "noisecraft.scene_attributes"
WEIGHTS_NAME = "scene_attributes.safetensors"
LAYOUTS = ("horizontal", "vertical")
FEATURE_DIM = 256
# (head name, number of classes) in logit order
HEADS = (("count", 2), ("layout", 2),
         ("colour0", len(COLOURS)), ("shape0", len(SHAPES)), ("size0", len(SIZES)),
         ("colour1", len(COLOURS)), ("shape1", len(SHAPES)), ("size1", len(SIZES)))


@dataclass(frozen=True)
class Canonical:
    """A scene in canonical form: count, layout (None for one object), objects in slot order."""

    count: int
    layout: str | None
    slots: tuple[SceneObject, ...]


def canonical(spec: SceneSpec) -> Canonical:
    """The canonical form of a spec: slot 0 is the left (horizontal) or upper (vertical) object."""
    if spec.relation is None:
        return Canonical(1, None, spec.objects)
    a, b = spec.objects
    layout = "horizontal" if spec.relation in ("left of", "right of") else "vertical"
    first = spec.relation in ("left of", "above")
    return Canonical(2, layout, (a, b) if first else (b, a))


def targets(specs: list[SceneSpec]) -> dict[str, torch.Tensor]:
    """Training targets per head (int64, -100 = ignored: layout and slot 1 of one-object scenes)."""
    n = len(specs)
    out = {name: torch.full((n,), -100, dtype=torch.long) for name, _ in HEADS}
    for i, spec in enumerate(specs):
        c = canonical(spec)
        out["count"][i] = c.count - 1
        if c.layout is not None:
            out["layout"][i] = LAYOUTS.index(c.layout)
        for k, o in enumerate(c.slots):
            out[f"colour{k}"][i], out[f"shape{k}"][i] = COLOURS.index(o.colour), SHAPES.index(o.shape)
            out[f"size{k}"][i] = SIZES.index(o.size)
    return out


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU())


class SceneAttributeNet(nn.Module):
    """(N, 3, 32, 32) in [-1, 1] -> (features (N, 256), {head: logits}). The spatial map is flattened (not
    pooled) so that the slots' left/right and above/below stay readable. About 1.2M parameters."""

    def __init__(self, dropout: float = 0.2):
        super().__init__()
        self.body = nn.Sequential(_conv(3, 32), _conv(32, 32), _conv(32, 64, 2),  # (N, 64, 16, 16)
                                  _conv(64, 64), _conv(64, 96, 2),                 # (N, 96, 8, 8)
                                  _conv(96, 96), _conv(96, 128, 2))                # (N, 128, 4, 4)
        self.fc = nn.Linear(128 * 16, FEATURE_DIM)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.Linear(FEATURE_DIM, sum(n for _, n in HEADS))

    def forward(self, x):
        features = F.relu(self.fc(self.body(x).flatten(1)))  # (N, 256)
        logits = self.heads(self.dropout(features))
        out, start = {}, 0
        for name, n in HEADS:
            out[name] = logits[:, start:start + n]
            start += n
        return features, out


def loss(logits: dict[str, torch.Tensor], target: dict[str, torch.Tensor], label_smoothing: float = 0.0):
    """Sum over heads of the mean cross-entropy over the samples where the head applies."""
    total = 0.0
    for name, _ in HEADS:
        t = target[name]
        if bool((t != -100).any()):
            total = total + F.cross_entropy(logits[name], t, ignore_index=-100, label_smoothing=label_smoothing)
    return total


# ------------------------------------------------------------------------------------------ weights
def bundled_weights_path() -> Path:
    path = Path(__file__).parent / "weights" / WEIGHTS_NAME
    if not path.is_file():
        raise WeightsError(f"the scene attribute classifier's weights are missing ({path}); create them with "
                           f"`python scripts/train_scene_classifier.py`")
    return path


def read_metadata(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return {k: json.loads(v) for k, v in meta.items()}


def load_scene_classifier(path=None) -> SceneAttributeNet:
    """The trained classifier (strict load), in eval mode."""
    from safetensors.torch import load_file

    from noisecraft.eval.effnet import load_strict

    path = Path(path) if path is not None else bundled_weights_path()
    if not path.is_file():
        raise WeightsError(f"scene attribute classifier weights not found: {path}")
    try:
        meta = read_metadata(path)
        state = load_file(str(path))
    except Exception as e:
        raise WeightsError(f"cannot read scene classifier weights {path}: {type(e).__name__}: {e}") from None
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a noisecraft scene classifier (metadata format {meta.get('format')!r})")
    return load_strict(SceneAttributeNet(), state, path).eval()


def save_scene_classifier(net: SceneAttributeNet, path, metadata: dict) -> None:
    from safetensors.torch import save

    from noisecraft.files import atomic_write_bytes

    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    meta = {k: json.dumps(v) for k, v in {"format": FORMAT, **metadata}.items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(path), save(tensors, metadata=meta))


# ------------------------------------------------------------------------------------------ scoring
def _check_images(images: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1:] != (3, SIDE, SIDE):
        raise EvalError(f"scene images must be (N, 3, {SIDE}, {SIDE}) in [-1, 1], got "
                           f"{getattr(images, 'shape', type(images).__name__)}")
    return images.float().clamp(-1, 1)


@torch.no_grad()
def predict(images: torch.Tensor, net: SceneAttributeNet | None = None, batch_size: int = 500):
    """(features (N, 256), {head: predicted class (N,)}) for (N, 3, 32, 32) images in [-1, 1]."""
    net = net if net is not None else load_scene_classifier()
    images = _check_images(images)
    feats, preds = [], {name: [] for name, _ in HEADS}
    for s in range(0, len(images), batch_size):
        f, logits = net.eval()(images[s:s + batch_size])
        feats.append(f)
        for name, _ in HEADS:
            preds[name].append(logits[name].argmax(1))
    return torch.cat(feats), {k: torch.cat(v) for k, v in preds.items()}


def scene_features(images: torch.Tensor, net: SceneAttributeNet | None = None) -> torch.Tensor:
    """The classifier's penultimate layer, (N, 256): a feature space for Frechet distances on scenes."""
    return predict(images, net)[0]


def prompt_adherence(images: torch.Tensor, prompts, net: SceneAttributeNet | None = None) -> dict:
    """Score images against their prompts (captions or SceneSpecs, one per image).

    Returns {"adherence": fraction of prompts fully satisfied, "per_attribute": {count, layout (two-object
    prompts: layout and order), colour, shape, size (per object): accuracy}, "satisfied": (N,) bool}."""
    specs = [p if isinstance(p, SceneSpec) else parse_caption(p) for p in prompts]
    if len(specs) != len(images):
        raise EvalError(f"{len(images)} images but {len(specs)} prompts; give one prompt per image")
    _, pred = predict(images, net)
    want = targets(specs)
    ok = {name: (pred[name] == want[name]) | (want[name] == -100) for name, _ in HEADS}
    satisfied = torch.stack(list(ok.values())).all(0)
    per = {"count": ok["count"].float().mean().item()}
    pairs = want["layout"] != -100
    if bool(pairs.any()):
        per["layout"] = (ok["layout"] & ok["count"])[pairs].float().mean().item()
    for attr in ("colour", "shape", "size"):
        hits = torch.cat([ok[f"{attr}{k}"][want[f"{attr}{k}"] != -100] for k in (0, 1)])
        per[attr] = hits.float().mean().item()
    return {"adherence": satisfied.float().mean().item(), "per_attribute": per, "satisfied": satisfied}
