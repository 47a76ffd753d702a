"""Metrics against the reference implementations' own functions (pytorch-fid, torch-fidelity), closed forms
and brute force. The peers' functions need no weights; where importing their module fails (both import
torchvision at module level), the function is compiled from the installed package's source file."""

import ast
import importlib
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from noisecraft.eval import EvalError, RankWarning, metrics


def reference_function(package: str, module: str, name: str):
    """`package.module.name`, imported, or compiled from the installed source (imports stripped)."""
    try:
        return getattr(importlib.import_module(f"{package}.{module}"), name)
    except Exception:  # noqa: BLE001 - e.g. torchvision missing or broken
        pass
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed")
    path = Path(spec.submodule_search_locations[0]) / f"{module}.py"
    tree = ast.parse(path.read_text())
    body = [n for n in tree.body if isinstance(n, ast.FunctionDef)
            or (isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant))]  # functions and constants
    scipy_linalg = pytest.importorskip("scipy.linalg")
    ns = {"np": np, "torch": torch, "linalg": scipy_linalg, "tqdm": lambda it, **_: it,
          "get_kwarg": lambda key, kwargs: kwargs[key], "vassert": lambda ok, msg: None, "vprint": lambda *a: None}
    exec(compile(ast.Module(body=body, type_ignores=[]), str(path), "exec"), ns)
    return ns[name]


def _features(n, d, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d)) / np.sqrt(d)
    return rng.standard_normal((n, d)) @ a + shift + 0.3 * rng.standard_normal(d)


def _rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


@pytest.mark.parametrize("n,d", [(300, 16), (2000, 64), (600, 200)])
def test_frechet_distance_matches_pytorch_fid(n, d):
    ref_fd = reference_function("pytorch_fid", "fid_score", "calculate_frechet_distance")
    x, y = _features(n, d, 0), _features(n + 17, d, 1, shift=0.1)
    s1, s2 = metrics.gaussian_stats(x), metrics.gaussian_stats(y)
    expected = ref_fd(s1[0], s1[1], s2[0], s2[1])
    assert _rel(metrics.frechet_distance(*s1, *s2), expected) <= 1e-6
    assert _rel(metrics.fd(x, y), expected) <= 1e-6


def test_frechet_distance_closed_form_and_identity():
    """Diagonal covariances: FD = |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2; FD(P, P) = 0."""
    rng = np.random.default_rng(3)
    mu1, mu2 = rng.standard_normal(10), rng.standard_normal(10)
    s1, s2 = rng.uniform(0.1, 3, 10), rng.uniform(0.1, 3, 10)
    exact = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert metrics.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(exact, rel=1e-12)
    x = _features(500, 20, 4)
    assert abs(metrics.fd(x, x)) < 1e-9


def test_frechet_distance_rank_deficient_is_finite_and_warns():
    x, y = _features(20, 50, 5), _features(30, 50, 6)
    with pytest.warns(RankWarning) as record:
        value = metrics.fd(x, y)
    assert any("20 samples for 50 feature dimensions" in str(w.message) for w in record)
    assert np.isfinite(value) and value > 0


@pytest.mark.parametrize("subset_size,subsets", [(100, 10), (250, 5)])
def test_kid_matches_torch_fidelity(subset_size, subsets):
    ref_kid = reference_function("torch_fidelity", "metric_kid", "kid_features_to_metric")
    x, y = _features(400, 32, 7), _features(300, 32, 8, shift=0.05)
    expected = ref_kid(torch.from_numpy(x), torch.from_numpy(y), kid_subsets=subsets, kid_subset_size=subset_size,
                       kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                       kid_kernel_poly_coef0=1, rng_seed=2020, verbose=False)
    ours = metrics.kid(x, y, subsets=subsets, subset_size=subset_size)
    assert _rel(ours.mean, expected["kernel_inception_distance_mean"]) <= 1e-6
    assert _rel(ours.std, expected["kernel_inception_distance_std"]) <= 1e-6


def test_kid_single_subset_equals_explicit_formula():
    """One subset of all samples: KID = the unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3, written out."""
    x, y = _features(40, 6, 9), _features(40, 6, 10, shift=0.2)
    k = lambda a, b: (a @ b / 6 + 1) ** 3  # noqa: E731
    m = 40
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    assert metrics.kid(x, y, subsets=1, subset_size=m).mean == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_inception_score_matches_torch_fidelity():
    ref_isc = reference_function("torch_fidelity", "metric_isc", "isc_features_to_metric")
    logits = _features(500, 10, 11) * 3
    expected = ref_isc(torch.from_numpy(logits), splits=10, shuffle=True, rng_seed=2020)
    ours = metrics.inception_score(logits)
    assert _rel(ours.mean, expected["inception_score_mean"]) <= 1e-6
    assert _rel(ours.std, expected["inception_score_std"]) <= 1e-6


def test_inception_score_bounds():
    """Confident, balanced predictions over K classes give IS = K; identical predictions give 1."""
    k = 7
    confident = np.repeat(np.eye(k) * 60.0, 10, axis=0)
    assert metrics.inception_score(confident, splits=1).mean == pytest.approx(k, rel=1e-6)
    assert metrics.inception_score(np.ones((50, k)), splits=1).mean == pytest.approx(1.0)


def _brute_force_pr(x, y, k):
    def radii(s):
        return [sorted(np.linalg.norm(s[i] - s[j]) for j in range(len(s)) if j != i)[k - 1] for i in range(len(s))]

    def coverage(points, centres):
        r = radii(centres)
        return np.mean([any(np.linalg.norm(p - c) <= rc for c, rc in zip(centres, r)) for p in points])

    return coverage(x, y), coverage(y, x)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_precision_recall_matches_brute_force(k):
    x, y = _features(60, 5, 12, shift=0.4), _features(45, 5, 13)
    got = metrics.precision_recall(x, y, k=k)
    expected = _brute_force_pr(x, y, k)
    assert got == pytest.approx(expected, abs=1e-12)


def test_precision_recall_extremes():
    y = _features(200, 4, 14)
    assert metrics.precision_recall(y + 100.0, y) == (0.0, 0.0)
    assert metrics.precision_recall(y.copy(), y) == (1.0, 1.0)


def test_fd_infinity_removes_the_finite_sample_bias():
    """FD_n of n samples is biased upward by about c / n (Chong & Forsyth 2020, Sec. 3); the extrapolation to
    1/n = 0 removes it: over 4 draws of N(0, I) in 32 dimensions, FD_N overshoots the exact FD to
    N(0.1, 1.5 I) by ~0.2 while FD_inf is unbiased (per-draw spread ~0.05)."""
    d, n = 32, 2000
    mu_r, sigma_r = np.full(d, 0.1), np.eye(d) * 1.5
    exact = metrics.frechet_distance(np.zeros(d), np.eye(d), mu_r, sigma_r)
    err_inf, err_n = [], []
    for seed in range(4):
        x = np.random.default_rng(seed).standard_normal((n, d))
        res = metrics.fd_infinity(x, mu_r, sigma_r, seed=seed)
        assert len(res.ns) == 15 and res.ns[0] == n // 5 and res.ns[-1] == n
        assert res.fd_inf == pytest.approx(np.polyval(np.polyfit(1 / res.ns, res.fds, 1), 0.0))
        err_inf.append(res.fd_inf - exact)
        err_n.append(res.fds[-1] - exact)
    assert np.mean(err_n) > 0.12
    assert abs(np.mean(err_inf)) < 0.1


def test_bad_inputs_name_the_problem():
    x = _features(50, 4, 16)
    with pytest.raises(EvalError, match="feature dimensions differ: 4 vs 5"):
        metrics.fd(x, _features(50, 5, 17))
    with pytest.raises(EvalError, match="subset_size"):
        metrics.kid(x, x, subset_size=51)
    with pytest.raises(EvalError, match="2-D array"):
        metrics.fd(x[0], x)
    with pytest.raises(EvalError, match="non-finite"):
        metrics.fd(np.full((5, 4), np.nan), x)
    with pytest.raises(EvalError, match="k must be in"):
        metrics.precision_recall(x, x, k=50)
    with pytest.raises(EvalError, match="at least 2 samples"):
        metrics.gaussian_stats(x[:1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics.gaussian_stats(x)  # 50 > 4: no rank warning


def test_class_shares_counts_confident_samples_and_argmax_shares():
    # Rows with softmax maxima 0.95 (class 2), ~0.58 (class 0), 0.999 (class 2) and a tie (argmax: class 0).
    logits = np.array([[0.0, 0.0, np.log(0.95 / 0.025)], [1.0, 0.5, 0.0], [0.0, 0.0, 8.0], [0.0, 0.0, 0.0]])
    shares = metrics.class_shares(logits, threshold=0.9)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert shares.confident == (p.max(axis=1) > 0.9).mean() == 0.5
    assert shares.shares == (0.5, 0.0, 0.5)
    with pytest.raises(metrics.EvalError, match=r"threshold must be in \(0, 1\)"):
        metrics.class_shares(logits, threshold=1.0)
