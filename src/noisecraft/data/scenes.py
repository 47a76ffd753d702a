"""A procedural compositional scene set with exact ground truth: one or two coloured shapes on black.

Each 32x32 RGB image holds one object ("a small red circle") or two objects in a spatial relation
("a small red circle left of a large blue square"). Every attribute that the caption names is stored
exactly, so a generated image can be scored against its prompt (`noisecraft.eval.adherence`).

Vocabularies (the attribute tensors hold indices into these tuples; -1 marks "absent"):

    SHAPES    = circle, square, triangle
    COLOURS   = red, green, blue, yellow
    SIZES     = small (bounding box 8 px), large (13 px)
    RELATIONS = left of, right of, above, below      "A left of B": A's centre is left of B's

Attributes of `load_scenes` (N items; object 0 is the one the caption names first):

    num_objects (N,) int64 1 or 2         shape, colour, size (N, 2) int64 (-1 when absent)
    relation    (N,) int64 (-1: none)     x, y (N, 2) float32 object centres in pixels (y down)
    boxes       (N, 2, 4) float32         each object's bounding box (x0, y0, x1, y1) / SIDE (NaN: absent), the
                                          grounding of the caption's k-th object (noisecraft.text.layout)

Geometry: a relation is drawn unambiguously - for "left of" the objects' boxes are separated
horizontally by at least GAP pixels and their centres differ vertically by at most MAX_OFFSET pixels
(likewise for above/below). Shapes are drawn at 4x resolution with Pillow and box-filtered down
(anti-aliased). Everything is a function of the seed: image i is the i-th draw of
numpy.random.default_rng(seed), so a `limit` gives a prefix of the full set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from noisecraft.data.base import ImageDataset, split_indices, uint8_to_float
from noisecraft.errors import DataError

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow")
SIZES = ("small", "large")
RELATIONS = ("left of", "right of", "above", "below")
RGB = {"red": (225, 40, 40), "green": (40, 190, 70), "blue": (50, 100, 240), "yellow": (240, 215, 40)}
SIDE = 32                      # image side in pixels
SIZE_PX = {"small": 8, "large": 13}  # bounding-box sides; two large ones fit side by side
GAP = 2                        # minimum free pixels between two objects' boxes along the relation axis
MAX_OFFSET = 3                 # maximum centre offset across the relation axis
MARGIN = 1                     # minimum free pixels between a box and the image border
DEFAULT_COUNT = 8000           # images in the full set
PAIR_FRACTION = 2 / 3          # fraction of images with two objects
SUPERSAMPLE = 4


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str

    def phrase(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class SceneSpec:
    """What a caption asks for: one object, or two objects and the relation of the first to the second."""

    objects: tuple[SceneObject, ...]
    relation: str | None = None

    def __post_init__(self):
        if len(self.objects) not in (1, 2) or (len(self.objects) == 2) != (self.relation is not None):
            raise DataError(f"a scene has one object, or two objects and a relation; got {self}")
        for o in self.objects:
            for value, vocab, what in ((o.shape, SHAPES, "shape"), (o.colour, COLOURS, "colour"),
                                       (o.size, SIZES, "size")):
                if value not in vocab:
                    raise DataError(f"unknown scene {what} {value!r}; allowed: {', '.join(vocab)}")
        if self.relation is not None and self.relation not in RELATIONS:
            raise DataError(f"unknown scene relation {self.relation!r}; allowed: {', '.join(RELATIONS)}")

    def caption(self) -> str:
        """'a small red circle' or 'a small red circle left of a large blue square'."""
        text = f"a {self.objects[0].phrase()}"
        if self.relation is not None:
            text += f" {self.relation} a {self.objects[1].phrase()}"
        return text


def parse_caption(caption: str) -> SceneSpec:
    """The exact inverse of SceneSpec.caption (DataError for text not in the scene grammar)."""
    words = caption.strip().lower().split()

    def obj(ws: list[str]) -> SceneObject:
        if len(ws) != 4 or ws[0] != "a":
            raise DataError(f"not a scene caption: {caption!r}; expected e.g. 'a small red circle left of a "
                            f"large blue square'")
        return SceneObject(shape=ws[3], colour=ws[2], size=ws[1])

    if len(words) == 4:
        return SceneSpec((obj(words),))
    for relation in RELATIONS:
        r = relation.split()
        if words[4:4 + len(r)] == r:
            return SceneSpec((obj(words[:4]), obj(words[4 + len(r):])), relation)
    raise DataError(f"not a scene caption: {caption!r}; relations: {', '.join(RELATIONS)}")


def spec_at(attributes: dict[str, torch.Tensor], i: int) -> SceneSpec:
    """The SceneSpec of item i from a scenes dataset's attribute tensors."""
    n = int(attributes["num_objects"][i])
    objects = tuple(SceneObject(SHAPES[int(attributes["shape"][i, k])], COLOURS[int(attributes["colour"][i, k])],
                                SIZES[int(attributes["size"][i, k])]) for k in range(n))
    rel = int(attributes["relation"][i])
    return SceneSpec(objects, RELATIONS[rel] if rel >= 0 else None)


# ------------------------------------------------------------------------------------------ sampling
def _random_object(rng: np.random.Generator) -> SceneObject:
    return SceneObject(SHAPES[rng.integers(len(SHAPES))], COLOURS[rng.integers(len(COLOURS))],
                       SIZES[rng.integers(len(SIZES))])


def random_spec(rng: np.random.Generator) -> SceneSpec:
    """One object (probability 1/3) or two objects that differ in shape or colour, with a relation."""
    first = _random_object(rng)
    if rng.random() >= PAIR_FRACTION:
        return SceneSpec((first,))
    while True:
        second = _random_object(rng)
        if (second.shape, second.colour) != (first.shape, first.colour):
            break
    return SceneSpec((first, second), RELATIONS[rng.integers(len(RELATIONS))])


def _range(half: float) -> tuple[float, float]:
    return MARGIN + half, SIDE - MARGIN - half


def place(spec: SceneSpec, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Centres (x, y) in pixels for the spec's objects, satisfying the geometry rules exactly."""
    halves = [SIZE_PX[o.size] / 2 for o in spec.objects]
    if spec.relation is None:
        lo, hi = _range(halves[0])
        return [(rng.uniform(lo, hi), rng.uniform(lo, hi))]
    horizontal = spec.relation in ("left of", "right of")
    first_before = spec.relation in ("left of", "above")  # the first object has the smaller coordinate
    a, b = (0, 1) if first_before else (1, 0)              # a: the object with the smaller coordinate
    need = halves[a] + halves[b] + GAP                     # minimum distance of the centres along the axis
    lo_a, hi_a = _range(halves[a])
    lo_b, hi_b = _range(halves[b])
    along_a = rng.uniform(lo_a, min(hi_a, hi_b - need))
    along_b = rng.uniform(max(lo_b, along_a + need), hi_b)
    lo, hi = max(_range(halves[0])[0], _range(halves[1])[0]), min(_range(halves[0])[1], _range(halves[1])[1])
    across_a = rng.uniform(lo, hi)
    across_b = float(np.clip(across_a + rng.uniform(-MAX_OFFSET, MAX_OFFSET), lo, hi))
    centres = [None, None]
    centres[a] = (along_a, across_a) if horizontal else (across_a, along_a)
    centres[b] = (along_b, across_b) if horizontal else (across_b, along_b)
    return centres


# ----------------------------------------------------------------------------------------- rendering
def _draw(draw, obj: SceneObject, centre: tuple[float, float]) -> None:
    s = SUPERSAMPLE
    half = SIZE_PX[obj.size] / 2 * s
    cx, cy = centre[0] * s, centre[1] * s
    colour = RGB[obj.colour]
    if obj.shape == "circle":
        draw.ellipse([cx - half, cy - half, cx + half - 1, cy + half - 1], fill=colour)
    elif obj.shape == "square":
        h = half * 0.85  # a square of the same visual weight as the circle
        draw.rectangle([cx - h, cy - h, cx + h - 1, cy + h - 1], fill=colour)
    else:
        draw.polygon([(cx, cy - half), (cx + half, cy + half), (cx - half, cy + half)], fill=colour)


def render(spec: SceneSpec, centres) -> np.ndarray:
    """One scene as a (SIDE, SIDE, 3) uint8 array (drawn at 4x, box-filtered down)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (SIDE * SUPERSAMPLE, SIDE * SUPERSAMPLE), (0, 0, 0))
    draw = ImageDraw.Draw(img)
    for obj, centre in zip(spec.objects, centres):
        _draw(draw, obj, centre)
    return np.asarray(img.reduce(SUPERSAMPLE))


def generate_scenes(count: int, seed: int = 0) -> tuple[np.ndarray, list[SceneSpec], np.ndarray]:
    """`count` scenes: (count, SIDE, SIDE, 3) uint8 pixels, their specs, and (count, 2, 2) centres (NaN: absent)."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((count, SIDE, SIDE, 3), dtype=np.uint8)
    centres = np.full((count, 2, 2), np.nan, dtype=np.float32)
    specs = []
    for i in range(count):
        spec = random_spec(rng)
        c = place(spec, rng)
        pixels[i] = render(spec, c)
        centres[i, :len(c)] = c
        specs.append(spec)
    return pixels, specs, centres


def scene_attributes(specs: list[SceneSpec], centres: np.ndarray) -> dict[str, torch.Tensor]:
    """The attribute tensors (see the module docstring) of a list of specs."""
    n = len(specs)
    out = {k: np.full((n, 2), -1, dtype=np.int64) for k in ("shape", "colour", "size")}
    num, rel = np.zeros(n, dtype=np.int64), np.full(n, -1, dtype=np.int64)
    for i, spec in enumerate(specs):
        num[i] = len(spec.objects)
        rel[i] = -1 if spec.relation is None else RELATIONS.index(spec.relation)
        for k, o in enumerate(spec.objects):
            out["shape"][i, k], out["colour"][i, k] = SHAPES.index(o.shape), COLOURS.index(o.colour)
            out["size"][i, k] = SIZES.index(o.size)
    attrs = {k: torch.from_numpy(v) for k, v in out.items()}
    attrs.update(num_objects=torch.from_numpy(num), relation=torch.from_numpy(rel),
                 x=torch.from_numpy(centres[:, :, 0].copy()), y=torch.from_numpy(centres[:, :, 1].copy()))
    side_px = np.array([SIZE_PX[s] for s in SIZES], dtype=np.float32)
    half = np.where(out["size"] >= 0, side_px[out["size"]] / 2, np.nan)  # (n, 2)
    cx, cy = centres[:, :, 0], centres[:, :, 1]
    corners = np.stack([cx - half, cy - half, cx + half, cy + half], -1) / SIDE  # (n, 2, 4)
    attrs["boxes"] = torch.from_numpy(corners.astype(np.float32))
    return attrs


def scene_split(count: int, split: str) -> np.ndarray:
    """Positions of `split` among the first `count` draws: the last 10% of min(count, DEFAULT_COUNT) are "test"
    and the rest "train". A set larger than the default keeps the default's test images (draws 7200..7999) and
    adds only training images (draws 8000 on)."""
    base = split_indices(None, min(count, DEFAULT_COUNT), split)
    if count <= DEFAULT_COUNT or split == "test":
        return base
    return np.concatenate([base, np.arange(DEFAULT_COUNT, count)])


def load_scenes(*, root=None, resolution=None, channels=None, split="all", limit=None, seed=0,
                count=None) -> ImageDataset:
    """The scene set: `count` (default DEFAULT_COUNT) images (3, 32, 32) with captions and attributes, drawn
    from `seed`.

    split: see `scene_split` (test: draws 7200..7999 whenever count >= DEFAULT_COUNT). Only the images needed for
    split/limit are rendered.
    """
    from noisecraft.data.base import convert_channels, resize_images

    if root is not None:
        raise DataError(f"dataset 'scenes' is generated; root does not apply, got root={root!r}")
    idx = scene_split(DEFAULT_COUNT if count is None else count, split)
    if limit is not None:
        idx = idx[:limit]
    pixels, specs, centres = generate_scenes(int(idx[-1]) + 1 if len(idx) else 0, seed)
    pixels, centres, specs = pixels[idx], centres[idx], [specs[i] for i in idx]
    images = uint8_to_float(pixels).permute(0, 3, 1, 2).contiguous()  # (n, 3, 32, 32)
    if resolution is not None:
        images = resize_images(images, resolution)
    if channels is not None:
        images = convert_channels(images, channels)
    return ImageDataset("scenes", images, captions=tuple(s.caption() for s in specs),
                        attributes=scene_attributes(specs, centres))
