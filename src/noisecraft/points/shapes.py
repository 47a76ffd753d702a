"""The dataset "shapes-points": 3-D point clouds sampled from the surfaces of primitive meshes, with captions.

Each shape is one of the trimesh primitives in KINDS (box, sphere, cylinder, cone, torus, capsule; its class
label), built with `trimesh.creation`, stretched by per-axis scales and turned about the vertical axis:

    scales   sx, sy ~ U(0.7, 1.4), sz = a * (sx + sy) / 2 with the aspect log a ~ U(log 0.4, log 2.5)
             (the sphere and the cylinder-like kinds keep sy = sx: a circular cross-section)
    torus    minor radius / major radius ~ U(0.2, 0.5)
    rotation a yaw ~ U(0, 2 pi) about z (z stays up, so "tall" and "flat" keep their meaning)

and N_POINTS points are drawn uniformly on its surface (triangles chosen with probability proportional to their
area, a uniform barycentric point in each: Osada et al. 2002, "Shape distributions", Sec. 4.2, eq. 1), all from
numpy.random.default_rng(seed). Every cloud is then centred on its mean point and scaled so that its farthest point
is at distance 1 (the unit ball). A sample is the tensor (3, N_POINTS): rows x, y, z, columns points (a set: their
order carries no meaning), so the diffusion core's schedules, losses and samplers apply unchanged.

Captions name the kind and the aspect: "a tall cylinder" (a > 1.5), "a flat box" (a < 1 / 1.5), else "a cone".
Class ids follow KINDS; shape i has kind i mod len(KINDS), so the classes are balanced and the test split (the last
tenth of each class, `noisecraft.data.base.split_indices`) holds the same number of each kind. Computed once and
cached under the noisecraft cache directory (points/); deterministic given (count, seed).
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import torch

from noisecraft.data.base import ImageDataset, split_indices
from noisecraft.errors import DataError
from noisecraft.files import atomic_write_bytes
from noisecraft.paths import cache_dir

DATASET = "shapes-points"
KINDS = ("box", "sphere", "cylinder", "cone", "torus", "capsule")
N_POINTS = 128
DEFAULT_COUNT = 3000
TALL, FLAT = 1.5, 1 / 1.5
ASPECT_RANGE = (0.4, 2.5)


def _unit_mesh(kind: str, rng: np.random.Generator):
    """The primitive `kind` with unit extent along each axis (before the per-axis scales)."""
    import trimesh

    c = trimesh.creation
    if kind == "box":
        return c.box(extents=(1.0, 1.0, 1.0))
    if kind == "sphere":
        return c.icosphere(subdivisions=3, radius=0.5)
    if kind == "cylinder":
        return c.cylinder(radius=0.5, height=1.0, sections=32)
    if kind == "cone":
        mesh = c.cone(radius=0.5, height=1.0, sections=32)
        mesh.apply_translation((0.0, 0.0, -0.5))
        return mesh
    if kind == "torus":
        ratio = rng.uniform(0.2, 0.5)
        major = 0.5 / (1 + ratio)  # outer radius 0.5
        mesh = c.torus(major_radius=major, minor_radius=ratio * major, major_sections=32, minor_sections=16)
        mesh.apply_scale((1.0, 1.0, 0.5 / (ratio * major)))  # unit height before the aspect scale
        return mesh
    if kind == "capsule":
        return c.capsule(height=0.5, radius=0.25, count=(16, 16))
    raise DataError(f"unknown shape kind {kind!r}; allowed: {', '.join(KINDS)}")


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n points uniform on a triangle mesh's surface (module docstring), (n, 3) float64."""
    tri = vertices[faces]  # (F, 3, 3)
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    face = rng.choice(len(faces), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    w = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)  # uniform barycentric coordinates (Osada eq. 1)
    return np.einsum("nk,nkd->nd", w, tri[face])


def normalise(points: np.ndarray) -> np.ndarray:
    """(n, 3) points centred on their mean and scaled so the farthest is at distance 1."""
    centred = points - points.mean(0)
    return centred / np.linalg.norm(centred, axis=1).max()


def caption(kind: str, aspect: float) -> str:
    """ "a tall cylinder" / "a flat box" / "a cone" (module docstring)."""
    word = "tall " if aspect > TALL else "flat " if aspect < FLAT else ""
    return f"a {word}{kind}"


def make_shape(kind: str, rng: np.random.Generator, n_points: int = N_POINTS) -> tuple[np.ndarray, float]:
    """One normalised cloud (n_points, 3) of `kind` and its aspect a (module docstring)."""
    mesh = _unit_mesh(kind, rng)
    sx = rng.uniform(0.7, 1.4)
    sy = sx if kind in ("sphere", "cylinder", "cone", "torus", "capsule") else rng.uniform(0.7, 1.4)
    aspect = float(np.exp(rng.uniform(np.log(ASPECT_RANGE[0]), np.log(ASPECT_RANGE[1]))))
    yaw = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(yaw), -np.sin(yaw), 0.0], [np.sin(yaw), np.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
    vertices = (np.asarray(mesh.vertices) * (sx, sy, aspect * (sx + sy) / 2)) @ rot.T
    return normalise(sample_surface(vertices, np.asarray(mesh.faces), n_points, rng)), aspect


def generate(count: int = DEFAULT_COUNT, seed: int = 0, n_points: int = N_POINTS) -> tuple[np.ndarray, np.ndarray,
                                                                                            list[str]]:
    """(count, 3, n_points) float32 clouds, (count,) int64 labels and the captions (module docstring)."""
    rng = np.random.default_rng(seed)
    clouds, labels, captions = [], [], []
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        points, aspect = make_shape(kind, rng, n_points)
        clouds.append(points.T.astype(np.float32))
        labels.append(i % len(KINDS))
        captions.append(caption(kind, aspect))
    return np.stack(clouds), np.asarray(labels, dtype=np.int64), captions


def load_shapes(count: int = DEFAULT_COUNT, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """`generate(count, seed)`, computed once and then read from the cache."""
    import trimesh

    key = hashlib.sha256(f"trimesh {trimesh.__version__} count {count} seed {seed} points {N_POINTS} v1".encode())
    path = cache_dir() / "points" / f"shapes-{key.hexdigest()[:16]}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as f:
            return f["clouds"], f["labels"], [str(c) for c in f["captions"]]
    clouds, labels, captions = generate(count, seed)
    buf = io.BytesIO()
    np.savez(buf, clouds=clouds, labels=labels, captions=np.asarray(captions))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return clouds, labels, captions


def load_shapes_points(*, root=None, resolution=None, channels=None, split="all", limit=None, seed=0,
                       count=None) -> ImageDataset:
    """The registered dataset "shapes-points": (n, 3, N_POINTS) clouds with labels (KINDS) and captions."""
    if root is not None or resolution is not None or channels is not None:
        raise DataError(f"dataset {DATASET!r} takes no root, resolution or channels")
    clouds, labels, captions = load_shapes(DEFAULT_COUNT if count is None else count, seed)
    idx = split_indices(labels, len(labels), split)[:limit]
    return ImageDataset(DATASET, torch.from_numpy(clouds[idx]), torch.from_numpy(labels[idx]), KINDS,
                        captions=tuple(captions[i] for i in idx))


__all__ = ["DATASET", "DEFAULT_COUNT", "KINDS", "N_POINTS", "caption", "generate", "load_shapes",
           "load_shapes_points", "make_shape", "normalise", "sample_surface"]
