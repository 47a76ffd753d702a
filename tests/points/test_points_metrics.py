"""Chamfer and EMD against brute-force references; MMD, COV and 1-NNA on known cases."""

import itertools

import numpy as np
import pytest
import torch

from noisecraft.errors import NoisecraftError
from noisecraft.points.metrics import chamfer_distance, distance_matrix, emd, mmd_cov, one_nna, point_cloud_metrics


def _brute_chamfer(x: np.ndarray, y: np.ndarray) -> float:
    a = np.mean([min(float(np.sum((p - q) ** 2)) for q in y.T) for p in x.T])
    b = np.mean([min(float(np.sum((p - q) ** 2)) for p in x.T) for q in y.T])
    return a + b


def _brute_emd(x: np.ndarray, y: np.ndarray) -> float:
    n = x.shape[1]
    return min(np.mean([np.linalg.norm(x[:, i] - y[:, p[i]]) for i in range(n)])
               for p in itertools.permutations(range(n)))


def test_chamfer_matches_brute_force_unequal_sizes():
    rng = np.random.default_rng(0)
    for _ in range(5):
        x, y = rng.normal(size=(3, 7)), rng.normal(size=(3, 11))
        assert float(chamfer_distance(x, y)[0]) == pytest.approx(_brute_chamfer(x, y), rel=1e-12)


def test_emd_matches_all_permutations():
    rng = np.random.default_rng(1)
    for _ in range(5):
        x, y = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
        assert float(emd(x, y)[0]) == pytest.approx(_brute_emd(x, y), rel=1e-12)


def test_distances_of_a_permuted_copy_are_zero_and_matrix_is_consistent():
    rng = np.random.default_rng(2)
    x = torch.as_tensor(rng.normal(size=(4, 3, 9)))
    perm = torch.as_tensor(rng.permutation(9))
    assert torch.allclose(chamfer_distance(x, x[:, :, perm]), torch.zeros(4, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(emd(x, x[:, :, perm]), torch.zeros(4, dtype=torch.float64), atol=1e-12)
    y = torch.as_tensor(rng.normal(size=(3, 3, 9)))
    for name, fn in (("cd", chamfer_distance), ("emd", emd)):
        m = distance_matrix(x, y, name, pairs=5)
        assert m.shape == (4, 3)
        assert float(m[2, 1]) == pytest.approx(float(fn(x[2:3], y[1:2])[0]), rel=1e-12)


def test_mmd_cov_and_one_nna_on_constructed_matrices():
    d_gr = torch.tensor([[1.0, 5.0, 4.0], [2.0, 3.0, 9.0]])  # generated x reference
    mmd, cov = mmd_cov(d_gr)
    assert mmd == pytest.approx((1 + 3 + 4) / 3) and cov == pytest.approx(1 / 3)  # both pick reference 0
    far = torch.full((2, 2), 10.0)
    assert one_nna(torch.zeros(2, 2), far, torch.zeros(2, 2)) == 1.0


def test_one_nna_identical_distributions_near_half_and_disjoint_one():
    rng = np.random.default_rng(3)
    a = torch.as_tensor(rng.normal(size=(60, 3, 16)))
    b = torch.as_tensor(rng.normal(size=(60, 3, 16)))
    same = point_cloud_metrics(a, b, distances=("cd",))
    assert 0.35 <= same["1-nna-cd"] <= 0.65
    disjoint = point_cloud_metrics(a, b + 10.0, distances=("cd", "emd"))
    assert disjoint["1-nna-cd"] == 1.0 and disjoint["1-nna-emd"] == 1.0
    identical = point_cloud_metrics(a[:20], a[:20], distances=("cd",))
    assert identical["cov-cd"] == 1.0 and identical["mmd-cd"] == 0.0


def test_bad_inputs_are_errors():
    with pytest.raises(NoisecraftError, match="same number of points"):
        emd(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(NoisecraftError, match="NaN"):
        chamfer_distance(np.full((3, 4), np.nan), np.zeros((3, 4)))
    with pytest.raises(NoisecraftError, match="unknown point-cloud distance"):
        distance_matrix(np.zeros((1, 3, 4)), np.zeros((1, 3, 4)), "hausdorff")
