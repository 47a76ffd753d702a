"""Point-cloud files: PLY (Turk 1994, the Stanford polygon file format) and a rendered PNG of several clouds.

A PLY written here is binary little-endian with one `vertex` element of properties `float x, float y, float z`
and `int cloud` (the index of the cloud in the file, so several clouds of one generation share a file; one cloud
is just a cloud), preceded by `comment` lines (the model and seed of each cloud). `read_ply` reads that layout and
ASCII / binary little-endian / binary big-endian PLY of a vertex element with numeric x, y, z (other
properties and elements are skipped), returning (K, 3, N) clouds (K = 1 without a `cloud` property).

Every writer checks the clouds first (shape (K, 3, N) with the run's point count, all finite) and formats the file
in memory, then writes it with one atomic rename: bad input raises PointCloudError before anything is written.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from noisecraft.errors import NoisecraftError
from noisecraft.files import atomic_write_bytes
from noisecraft.points.shapes import KINDS


class PointCloudError(NoisecraftError):
    """A point cloud of the wrong shape or point count, with NaN or inf, or a malformed PLY file."""


_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def check_clouds(clouds, n_points: int | None = None, what: str = "point clouds") -> np.ndarray:
    """`clouds` (K, 3, N) or (3, N) as a float64 (K, 3, N) array; PointCloudError for another shape, another
    point count than `n_points` (None: any) or a NaN / inf."""
    x = clouds.detach().cpu().double().numpy() if isinstance(clouds, torch.Tensor) else np.asarray(clouds, float)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1] != 3 or x.shape[0] < 1 or x.shape[2] < 1:
        raise PointCloudError(f"{what}: expected shape (K, 3, N) (rows x, y, z) or (3, N), got {x.shape}")
    if n_points is not None and x.shape[2] != n_points:
        raise PointCloudError(f"{what}: {x.shape[2]} points per cloud, but the model's clouds have {n_points}")
    bad = int((~np.isfinite(x)).sum())
    if bad:
        raise PointCloudError(f"{what}: {bad} coordinate(s) are NaN or inf")
    return x


def ply_bytes(clouds, n_points: int | None = None, comments: list[str] | None = None) -> bytes:
    """The binary PLY of clouds (K, 3, N) (module docstring), after `check_clouds`."""
    x = check_clouds(clouds, n_points)
    k, _, n = x.shape
    rows = np.empty(k * n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("cloud", "<i4")])
    pts = x.transpose(0, 2, 1).reshape(-1, 3)
    rows["x"], rows["y"], rows["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    rows["cloud"] = np.repeat(np.arange(k), n)
    lines = ["ply", "format binary_little_endian 1.0"]
    lines += [f"comment {c}".replace("\n", " ") for c in comments or []]
    lines += [f"element vertex {k * n}", "property float x", "property float y", "property float z",
              "property int cloud", "end_header"]
    return ("\n".join(lines) + "\n").encode("ascii") + rows.tobytes()


def save_ply(clouds, out: str | Path, n_points: int | None = None, comments: list[str] | None = None) -> Path:
    """Write clouds (K, 3, N) as one PLY file, atomically (nothing is written for bad input)."""
    out = Path(out)
    data = ply_bytes(clouds, n_points, comments)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, data)
    return out


def read_ply(path: str | Path) -> np.ndarray:
    """The clouds (K, 3, N) float64 of a PLY file (module docstring); PointCloudError for a malformed file."""
    path = Path(path)
    data = path.read_bytes()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise PointCloudError(f"{path}: not a PLY file (no 'ply' magic or no end_header)")
    body_start = data.index(b"\n", end) + 1
    header = data[:end].decode("ascii", errors="replace").splitlines()
    fmt, elements = None, []  # elements: [name, count, [(prop, dtype)]]
    for line in header[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            fmt = words[1]
        elif words[0] == "element":
            elements.append([words[1], int(words[2]), []])
        elif words[0] == "property" and elements:
            if words[1] == "list":
                elements[-1][2].append((words[-1], None))
            elif words[1] in _PLY_TYPES:
                elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
            else:
                raise PointCloudError(f"{path}: unknown PLY property type {words[1]!r}")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise PointCloudError(f"{path}: unknown PLY format {fmt!r}; allowed: ascii, binary_little_endian, "
                              f"binary_big_endian")
    if not elements or elements[0][0] != "vertex" or any(t is None for _, t in elements[0][2]):
        raise PointCloudError(f"{path}: the first PLY element must be 'vertex' with scalar properties")
    _, count, props = elements[0]
    names = [p for p, _ in props]
    if not {"x", "y", "z"} <= set(names):
        raise PointCloudError(f"{path}: the vertex element has no x, y, z properties (it has {', '.join(names)})")
    try:
        if fmt == "ascii":
            text = data[body_start:].decode("ascii").split("\n")[:count]
            table = np.array([[float(v) for v in line.split()[:len(props)]] for line in text])
            if table.shape != (count, len(props)):
                raise ValueError
            cols = {p: table[:, i] for i, p in enumerate(names)}
        else:
            order = "<" if fmt == "binary_little_endian" else ">"
            dtype = np.dtype([(p, order + t) for p, t in props])
            table = np.frombuffer(data, dtype=dtype, count=count, offset=body_start)
            cols = {p: table[p].astype(np.float64) for p in names}
    except ValueError:
        raise PointCloudError(f"{path}: the PLY body does not hold {count} vertices of {len(props)} "
                              f"properties") from None
    pts = np.stack([cols["x"], cols["y"], cols["z"]])  # (3, V)
    if "cloud" not in cols:
        return pts[None]
    ids = cols["cloud"].astype(np.int64)
    k = int(ids.max()) + 1 if len(ids) else 0
    sizes = np.bincount(ids, minlength=k)
    if k == 0 or (sizes != sizes[0]).any() or (np.diff(ids) < 0).any():
        raise PointCloudError(f"{path}: its clouds are not stored in order with one point count each")
    return pts.reshape(3, k, -1).transpose(1, 0, 2)


def render_png(clouds, titles: list[str] | None = None, columns: int = 4, max_clouds: int = 16) -> bytes:
    """A PNG of up to `max_clouds` clouds as 3-D scatter plots in a grid (matplotlib, z up, equal axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = check_clouds(clouds)[:max_clouds]
    cols = min(columns, len(x))
    rows = -(-len(x) // cols)
    fig = plt.figure(figsize=(2.6 * cols, 2.6 * rows))
    for k, cloud in enumerate(x):
        ax = fig.add_subplot(rows, cols, k + 1, projection="3d")
        ax.scatter(cloud[0], cloud[1], cloud[2], c=cloud[2], cmap="viridis", s=6, depthshade=True)
        ax.set_xlim(-1, 1), ax.set_ylim(-1, 1), ax.set_zlim(-1, 1)
        ax.set_box_aspect((1, 1, 1))
        ax.view_init(elev=20, azim=35)
        ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])
        if titles is not None:
            ax.set_title(titles[k], fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def _run_points(run) -> int | None:
    shape = tuple(getattr(run, "data_shape", ()) or ())
    return int(shape[-1]) if len(shape) == 2 else None


def _titles(result) -> list[str]:
    from noisecraft.pipelines.outputs import sample_titles

    return sample_titles(result, KINDS)


def write_ply(result, out: Path, run) -> Path:
    """The registered .ply writer: every cloud of the generation in one PLY (module docstring)."""
    model = result.parameters.get("model", "noisecraft")
    return save_ply(result.images, out, _run_points(run), [f"noisecraft {model}", *_titles(result)])


def write_png(result, out: Path, run) -> Path:
    """The registered .png writer (and train's preview): up to 16 clouds rendered in a grid."""
    check_clouds(result.images, _run_points(run), "generated point clouds")
    data = render_png(result.images, _titles(result))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, data)
    return out


__all__ = ["PointCloudError", "check_clouds", "ply_bytes", "read_ply", "render_png", "save_ply", "write_ply",
           "write_png"]
