"""Sample-quality metrics on feature arrays (N, D), all in float64 numpy.

| function            | metric                                              | reference                            |
|---------------------|-----------------------------------------------------|--------------------------------------|
| frechet_distance    | FD between Gaussians fitted to two feature sets     | Heusel et al. 2017, Sec. 4 ("FID")   |
| kid                 | unbiased MMD^2, cubic polynomial kernel, in subsets | Binkowski et al. 2018, Sec. 3 / App. |
| precision_recall    | k-NN manifold precision and recall                  | Kynkaanniemi et al. 2019, Eq. 1-2    |
| inception_score     | exp E_x KL(p(y|x) || p(y)) for any classifier       | Salimans et al. 2016, Sec. 4         |
| fd_infinity         | FD extrapolated to infinitely many samples          | Chong & Forsyth 2020, Sec. 3         |

Notation: X are the features of the generated samples, Y those of the reference data; (mu, Sigma) is a
Gaussian fit (mean, unbiased covariance as numpy.cov). FD, KID and FD_inf: lower is better; precision,
recall and IS: higher is better. Every function takes numpy arrays or torch tensors.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from noisecraft.eval.common import EvalError, as_features, check_pair, warn_rank

LOWER_IS_BETTER = {"fd": True, "fd_inf": True, "kid": True, "precision": False, "recall": False, "is": False,
                   "near_copies": True}


class KID(NamedTuple):
    mean: float  # mean of the subset MMD^2 estimates
    std: float   # their standard deviation (numpy.std, ddof 0, as torch-fidelity)


class PrecisionRecall(NamedTuple):
    precision: float
    recall: float


class InceptionScore(NamedTuple):
    mean: float
    std: float


class FDInfinity(NamedTuple):
    fd_inf: float        # the intercept at 1/n = 0
    ns: np.ndarray       # the sample counts n used
    fds: np.ndarray      # FD at each n
    slope: float         # d FD / d (1/n)


# ------------------------------------------------------------------------------------------ Frechet
def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """(mu, Sigma) of (N, D) features: the mean and the unbiased covariance (numpy.cov, ddof 1).

    Warns (RankWarning) when N <= D: Sigma then has rank < D and FD is biased upward.
    """
    x = as_features(features)
    n, d = x.shape
    if n < 2:
        raise EvalError(f"need at least 2 samples for a covariance, got {n}")
    warn_rank(n, d, "gaussian_stats")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(d, d)


def sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """The principal square root of a symmetric positive semi-definite matrix, by eigendecomposition
    (negative round-off eigenvalues are clipped to 0)."""
    a = (a + a.T) / 2
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr (Sigma1 Sigma2)^(1/2), computed stably as sum_i sqrt(lambda_i) over the eigenvalues of the
    symmetric PSD matrix M = Sigma1^(1/2) Sigma2 Sigma1^(1/2), which is similar to Sigma1 Sigma2."""
    s1 = sqrtm_psd(sigma1)
    m = s1 @ sigma2 @ s1
    lam = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(lam, 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2, *, eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, Sigma1) and N(mu2, Sigma2) (Heusel et al. 2017, Sec. 4; Dowson &
    Landau 1982):

        d^2 = ||mu1 - mu2||^2 + Tr(Sigma1 + Sigma2 - 2 (Sigma1 Sigma2)^(1/2))

    in float64, with the trace of the square root from `trace_sqrt_product`. If that fails (no
    convergence or a non-finite result), eps * I is added to both covariances and it is retried once,
    as pytorch-fid does, with a warning.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise EvalError(f"Gaussian statistics do not match: mu {mu1.shape} vs {mu2.shape}, "
                        f"Sigma {sigma1.shape} vs {sigma2.shape}")
    for name, a in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.isfinite(a).all():
            raise EvalError(f"{name} has non-finite values (NaN or inf)")
    try:
        tr = trace_sqrt_product(sigma1, sigma2)
        if not np.isfinite(tr):
            raise np.linalg.LinAlgError("non-finite trace")
    except np.linalg.LinAlgError:
        warnings.warn(f"Frechet distance: singular product; adding {eps} to the covariance diagonals",
                      RuntimeWarning, stacklevel=2)
        offset = np.eye(d) * eps
        tr = trace_sqrt_product(sigma1 + offset, sigma2 + offset)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr)


def fd(x, y) -> float:
    """Frechet distance between the Gaussian fits of two feature sets (N1, D) and (N2, D)."""
    x, y = as_features(x, "generated features"), as_features(y, "reference features")
    check_pair(x, y)
    return frechet_distance(*gaussian_stats(x), *gaussian_stats(y))


def fd_infinity(x, mu_ref, sigma_ref, *, ns=None, num_points: int = 15, seed: int = 0) -> FDInfinity:
    """FD extrapolated to infinitely many generated samples (Chong & Forsyth 2020, Sec. 3): FD_n is
    computed on random subsets of n of the generated features X for several n, a line FD_n = a / n + b
    is fitted by least squares, and b (the value at 1/n = 0) is FD_inf.

    ns: the subset sizes; default `num_points` sizes evenly spaced from N // 5 to N (the paper spaces
    15 sizes from 5000 to 50000, i.e. N / 10 to N). Each subset is the first n of a fresh permutation
    drawn from numpy.random.default_rng(seed). The fit is meaningful only for n well above D.
    """
    x = as_features(x, "generated features")
    n_all, d = x.shape
    if ns is None:
        ns = np.linspace(max(2, n_all // 5), n_all, num_points)
    ns = np.unique(np.asarray(ns).astype(np.int64))
    if len(ns) < 2 or ns[0] < 2 or ns[-1] > n_all:
        raise EvalError(f"fd_infinity needs at least 2 distinct subset sizes in [2, {n_all}], got {ns.tolist()}")
    warn_rank(int(ns[0]), d, "fd_infinity (smallest subset)")
    rng = np.random.default_rng(seed)
    fds = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # rank warned once above
        for n in ns:
            sub = x[rng.permutation(n_all)[:n]]
            fds.append(frechet_distance(*gaussian_stats(sub), mu_ref, sigma_ref))
    fds = np.asarray(fds)
    slope, intercept = np.polyfit(1.0 / ns, fds, 1)
    return FDInfinity(float(intercept), ns, fds, float(slope))


# ---------------------------------------------------------------------------------------------- KID
def polynomial_kernel(x: np.ndarray, y: np.ndarray, *, degree: int = 3, gamma: float | None = None,
                      coef0: float = 1.0) -> np.ndarray:
    """k(x, y) = (gamma x.y + coef0)^degree, default gamma = 1 / D: the cubic kernel of Binkowski et al.
    2018, Sec. 3, k(x, y) = (x.y / d + 1)^3."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (x @ y.T * gamma + coef0) ** degree


def mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    """The unbiased estimator of MMD^2 for m samples each (Gretton et al. 2012, Eq. 3; Binkowski et al.
    2018, Eq. 2 with the cross term averaged over all m^2 pairs, as their code and torch-fidelity):

        MMD^2 = sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (m (m-1))
                - 2 sum_{i, j} k(x_i, y_j) / m^2
    """
    m = k_xx.shape[0]
    off_xx = (k_xx.sum(axis=1) - np.diagonal(k_xx)).sum()  # summation order as torch-fidelity's mmd2
    off_yy = (k_yy.sum(axis=1) - np.diagonal(k_yy)).sum()
    return float((off_xx + off_yy) / (m * (m - 1)) - 2 * k_xy.sum(axis=0).sum() / (m * m))


def kid(x, y, *, subsets: int = 100, subset_size: int | None = 1000, degree: int = 3, gamma: float | None = None,
        coef0: float = 1.0, seed: int = 2020) -> KID:
    """Kernel Inception Distance (Binkowski et al. 2018, Sec. 3): the unbiased MMD^2 with the cubic
    polynomial kernel, averaged over `subsets` random subsets of `subset_size` samples from each set
    (without replacement), with its standard deviation; the same procedure and random draws as
    torch-fidelity (numpy RandomState(seed), first X then Y per subset; defaults 100 x 1000, seed 2020).

    subset_size: None uses min(1000, N_x, N_y); an explicit value larger than either set is an error.
    """
    x, y = as_features(x, "generated features"), as_features(y, "reference features")
    check_pair(x, y)
    nx, ny = len(x), len(y)
    if subset_size is None:
        subset_size = min(1000, nx, ny)
    if not 2 <= subset_size <= min(nx, ny):
        raise EvalError(f"KID subset_size must be in [2, min(N_generated, N_reference)] = [2, {min(nx, ny)}], "
                        f"got {subset_size}; pass a smaller subset_size or more samples")
    if subsets < 1:
        raise EvalError(f"KID subsets must be >= 1, got {subsets}")
    rng = np.random.RandomState(seed)
    mmds = np.zeros(subsets)
    for i in range(subsets):
        a = x[rng.choice(nx, subset_size, replace=False)]
        b = y[rng.choice(ny, subset_size, replace=False)]
        kw = {"degree": degree, "gamma": gamma, "coef0": coef0}
        mmds[i] = mmd2_unbiased(polynomial_kernel(a, a, **kw), polynomial_kernel(a, b, **kw),
                                polynomial_kernel(b, b, **kw))
    return KID(float(mmds.mean()), float(mmds.std()))


# ------------------------------------------------------------------------------- precision / recall
def chunk_rows(n_cols: int, budget: int = 8_000_000) -> int:
    """Rows per chunk so that a (rows, n_cols) block of distances holds at most `budget` elements."""
    return max(1, budget // max(1, n_cols))


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """||a_i - b_j||^2 for all pairs, float64, clipped at 0 (round-off)."""
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.maximum(d2, 0.0)


def knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance of each feature vector to its k-th nearest neighbour in the same set, itself excluded
    (Kynkaanniemi et al. 2019, Sec. 2: NN_k(phi'))."""
    n = len(features)
    out = np.empty(n)
    step = chunk_rows(n)
    for s in range(0, n, step):
        d2 = squared_distances(features[s:s + step], features)
        d2[np.arange(d2.shape[0]), np.arange(s, s + d2.shape[0])] = np.inf  # exclude self
        out[s:s + step] = np.sqrt(np.partition(d2, k - 1, axis=1)[:, k - 1])
    return out


def manifold_coverage(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> float:
    """Fraction of `points` inside at least one ball B(centre_j, radius_j) (Kynkaanniemi et al. 2019, Eq. 1,
    f(phi, Phi) = 1 iff ||phi - phi'|| <= ||phi' - NN_k(phi')|| for some phi' in Phi)."""
    inside = np.zeros(len(points), dtype=bool)
    step = chunk_rows(len(centres))
    for s in range(0, len(points), step):
        d = np.sqrt(squared_distances(points[s:s + step], centres))
        inside[s:s + step] = (d <= radii[None, :]).any(axis=1)
    return float(inside.mean())


def precision_recall(x, y, *, k: int = 3) -> PrecisionRecall:
    """Improved precision and recall (Kynkaanniemi et al. 2019, Eq. 2): the manifold of a set is the union
    of balls around each of its points reaching its k-th nearest neighbour (k = 3 as in the paper);
    precision = fraction of generated X inside the manifold of real Y, recall = fraction of real Y inside
    the manifold of X. Exact Euclidean distances in float64 (no approximation)."""
    x, y = as_features(x, "generated features"), as_features(y, "reference features")
    check_pair(x, y)
    if not 1 <= k < min(len(x), len(y)):
        raise EvalError(f"precision/recall k must be in [1, min(N_generated, N_reference) - 1] = "
                        f"[1, {min(len(x), len(y)) - 1}], got {k}")
    precision = manifold_coverage(x, y, knn_radii(y, k))
    recall = manifold_coverage(y, x, knn_radii(x, k))
    return PrecisionRecall(precision, recall)


# ------------------------------------------------------------------------------------ Inception Score
def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def inception_score(logits, *, splits: int = 10, shuffle: bool = True, seed: int = 2020) -> InceptionScore:
    """Inception Score of any classifier's logits (N, K) (Salimans et al. 2016, Sec. 4):

        IS = exp( E_x KL( p(y|x) || p(y) ) ),   p(y) = mean_x p(y|x) within each split,

    computed on `splits` equal parts (after a RandomState(seed) shuffle) and reported as mean and std
    over the parts, the same procedure as torch-fidelity. Higher is better; it lies in [1, K].
    """
    z = as_features(logits, "logits")
    n = len(z)
    if not 1 <= splits <= n:
        raise EvalError(f"inception score splits must be in [1, N = {n}], got {splits}")
    if shuffle:
        z = z[np.random.RandomState(seed).permutation(n)]
    log_p = _log_softmax(z)
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        part = slice(i * n // splits, (i + 1) * n // splits)
        q = p[part].mean(axis=0, keepdims=True)
        kl = (p[part] * (log_p[part] - np.log(q))).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return InceptionScore(float(np.mean(scores)), float(np.std(scores)))


# ------------------------------------------------------------------------------------ class shares
class ClassShares(NamedTuple):
    confident: float          # fraction of samples whose top class probability exceeds the threshold
    shares: tuple[float, ...]  # fraction of samples whose top class is k, for each class k


def class_shares(logits, *, threshold: float = 0.9) -> ClassShares:
    """How a classifier reads generated samples, from its logits (N, K): the fraction whose softmax maximum
    exceeds `threshold` (a legibility rate: the classifier is sure what the sample is) and the share of samples
    assigned to each class by argmax (mode coverage: for MNIST each digit should be near 1/K)."""
    z = as_features(logits, "logits")
    if not 0.0 < threshold < 1.0:
        raise EvalError(f"class-share threshold must be in (0, 1), got {threshold}")
    p = np.exp(_log_softmax(z))
    counts = np.bincount(p.argmax(axis=1), minlength=z.shape[1])
    return ClassShares(float((p.max(axis=1) > threshold).mean()), tuple(float(c) / len(z) for c in counts))
