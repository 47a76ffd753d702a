"""Point-cloud distances and the generative metrics built on them (the definitions of PointFlow, Yang et al. 2019).

Clouds are given in the data layout (K, 3, N): K clouds, rows x, y, z, N points each.

Distances between two clouds X, Y (Fan et al. 2017, "A point set generation network", eqs. 1-2, as in
Achlioptas et al. 2018, Sec. 2, and Yang et al. 2019, Sec. 5.1):

    Chamfer  CD(X, Y)  = mean_{x in X} min_{y in Y} ||x - y||^2 + mean_{y in Y} min_{x in X} ||x - y||^2
    EMD      EMD(X, Y) = min over bijections phi: X -> Y of mean_{x in X} ||x - phi(x)||       (|X| = |Y|)

EMD is solved exactly, as a linear assignment on the N x N matrix of Euclidean distances
(scipy.optimize.linear_sum_assignment, the Jonker-Volgenant algorithm), not approximated (PointFlow's CUDA
kernel is an auction approximation). Both are the per-point means (neither is multiplied by N).

Set metrics between generated clouds S_g and reference clouds S_r (Yang et al. 2019, Sec. 5.1, eqs. 9-11;
MMD and COV from Achlioptas et al. 2018, Sec. 4), for a distance D (CD or EMD):

    MMD    = mean_{Y in S_r} min_{X in S_g} D(X, Y)                               (fidelity; lower is better)
    COV    = |{argmin_{Y in S_r} D(X, Y) : X in S_g}| / |S_r|                     (coverage; higher is better)
    1-NNA  = (sum_{X in S_g} 1[N_X in S_g] + sum_{Y in S_r} 1[N_Y in S_r]) / (|S_g| + |S_r|)
             N_Z the nearest neighbour of Z in S_g u S_r without Z itself (leave-one-out 1-NN accuracy; 50% is
             ideal: the two sets cannot be told apart; 100%: every cloud's nearest neighbour is from its own set)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from noisecraft.errors import NoisecraftError

DISTANCES = ("cd", "emd")


def _clouds(x, what: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1] != 3 or x.shape[2] < 1:
        raise NoisecraftError(f"{what}: expected point clouds of shape (K, 3, N) or (3, N), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise NoisecraftError(f"{what}: the point clouds contain NaN or inf")
    return x.double()


def _pairwise_sq(x: Tensor, y: Tensor) -> Tensor:
    """(..., N, M) squared distances between the points of x (..., 3, N) and y (..., 3, M)."""
    d = x[..., :, :, None] - y[..., :, None, :]  # (..., 3, N, M)
    return d.square().sum(-3)


def chamfer_distance(x, y) -> Tensor:
    """CD of paired clouds x (K, 3, N), y (K, 3, M) -> (K,) float64 (module docstring)."""
    x, y = _clouds(x, "chamfer x"), _clouds(y, "chamfer y")
    if x.shape[0] != y.shape[0]:
        raise NoisecraftError(f"chamfer_distance: {x.shape[0]} clouds against {y.shape[0]}; pass as many of each "
                              f"(or use distance_matrix)")
    d = _pairwise_sq(x, y)
    return d.min(2).values.mean(1) + d.min(1).values.mean(1)


def emd(x, y) -> Tensor:
    """Exact EMD of paired clouds x, y (K, 3, N) of the same point count -> (K,) float64 (module docstring)."""
    x, y = _clouds(x, "emd x"), _clouds(y, "emd y")
    if x.shape != y.shape:
        raise NoisecraftError(f"emd needs clouds of the same shape (the same number of points), got "
                              f"{tuple(x.shape)} and {tuple(y.shape)}")
    return torch.from_numpy(_assignment_means(_pairwise_sq(x, y).sqrt().numpy()))


def distance_matrix(a, b=None, distance: str = "cd", pairs: int = 256) -> Tensor:
    """(|a|, |b|) float64 matrix of D(a_i, b_j) for clouds a (K, 3, N), b (L, 3, N); distance "cd" or "emd".
    b None: a against itself (a symmetric matrix; only i <= j is computed). `pairs`: clouds pairs per block."""
    if distance not in DISTANCES:
        raise NoisecraftError(f"unknown point-cloud distance {distance!r}; allowed: {', '.join(DISTANCES)}")
    a = _clouds(a, "distance_matrix a")
    same = b is None
    b = a if same else _clouds(b, "distance_matrix b")
    if distance == "emd" and a.shape[2] != b.shape[2]:
        raise NoisecraftError(f"emd needs clouds of the same number of points, got {a.shape[2]} and {b.shape[2]}")
    ii, jj = torch.triu_indices(len(a), len(a)) if same else torch.cartesian_prod(
        torch.arange(len(a)), torch.arange(len(b))).T
    values = torch.empty(len(ii), dtype=torch.float64)
    for k in range(0, len(ii), pairs):
        x, y = a[ii[k:k + pairs]], b[jj[k:k + pairs]]
        d = _pairwise_sq(x, y)  # (P, N, M)
        if distance == "cd":
            values[k:k + pairs] = d.min(2).values.mean(1) + d.min(1).values.mean(1)
        else:
            values[k:k + pairs] = torch.from_numpy(_assignment_means(d.sqrt().numpy()))
    out = torch.empty(len(a), len(b), dtype=torch.float64)
    out[ii, jj] = values
    if same:
        out[jj, ii] = values
    return out


def _assignment_means(dist: np.ndarray) -> np.ndarray:
    """Per matrix of (P, N, N) distances, the mean cost of its optimal assignment (exact EMD)."""
    from scipy.optimize import linear_sum_assignment

    out = np.empty(len(dist))
    for k, m in enumerate(dist):
        rows, cols = linear_sum_assignment(m)
        out[k] = m[rows, cols].mean()
    return out


def mmd_cov(d_gr: Tensor) -> tuple[float, float]:
    """(MMD, COV) from the (|S_g|, |S_r|) distance matrix (module docstring)."""
    mmd = float(d_gr.min(0).values.mean())
    cov = len(set(d_gr.argmin(1).tolist())) / d_gr.shape[1]
    return mmd, cov


def one_nna(d_gg: Tensor, d_gr: Tensor, d_rr: Tensor) -> float:
    """Leave-one-out 1-NN accuracy from the three distance matrices (module docstring), in [0, 1]."""
    g, r = d_gg.shape[0], d_rr.shape[0]
    full = torch.cat([torch.cat([d_gg, d_gr], 1), torch.cat([d_gr.T, d_rr], 1)], 0).clone()
    full.fill_diagonal_(float("inf"))
    nearest = full.argmin(1)
    own = torch.cat([nearest[:g] < g, nearest[g:] >= g])
    return float(own.double().mean()) if g + r else float("nan")


def point_cloud_metrics(generated, reference, distances: tuple[str, ...] = DISTANCES) -> dict[str, float]:
    """MMD, COV and 1-NNA of `generated` against `reference` clouds (K, 3, N) for each distance:
    keys "mmd-cd", "cov-cd", "1-nna-cd", "mmd-emd", ... (module docstring)."""
    g, r = _clouds(generated, "generated"), _clouds(reference, "reference")
    if g.shape[1:] != r.shape[1:]:
        raise NoisecraftError(f"generated clouds {tuple(g.shape[1:])} and reference clouds {tuple(r.shape[1:])} "
                              f"differ in point count")
    out: dict[str, float] = {}
    for name in distances:
        d_gr = distance_matrix(g, r, name)
        mmd, cov = mmd_cov(d_gr)
        out[f"mmd-{name}"], out[f"cov-{name}"] = mmd, cov
        out[f"1-nna-{name}"] = one_nna(distance_matrix(g, None, name), d_gr, distance_matrix(r, None, name))
    return out


__all__ = ["DISTANCES", "chamfer_distance", "distance_matrix", "emd", "mmd_cov", "one_nna", "point_cloud_metrics"]
