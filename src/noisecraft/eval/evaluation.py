"""One call from images to numbers: features, cached reference statistics, the chosen metrics.

    from noisecraft.eval import evaluate
    result = evaluate(images, reference="mnist", features="mnist", metrics=("fd", "kid", "pr", "is"))
    # {"fd": ..., "kid": ..., "kid_std": ..., "precision": ..., "recall": ..., "is": ..., "is_std": ...,
    #  "num_samples": ..., "num_reference": ..., "features": "mnist", "reference": "mnist/train"}

Metric names (METRICS): fd, fd_inf, kid, pr (precision and recall), is, classes (confident fraction and
class shares by the feature network's classifier), mem (near-copy fraction; needs
the reference dataset's images, see noisecraft.eval.memorization).
"""

from __future__ import annotations

import numpy as np

from noisecraft.eval.common import EvalError

METRICS = {
    "fd": "Frechet distance (Heusel et al. 2017) in the chosen feature space",
    "fd_inf": "FD extrapolated to infinitely many samples (Chong & Forsyth 2020)",
    "kid": "Kernel Inception Distance, unbiased MMD^2 with a cubic kernel, mean and std over subsets",
    "pr": "improved precision and recall, k = 3 nearest neighbours (Kynkaanniemi et al. 2019)",
    "is": "Inception-Score-style score of the feature network's classifier (Salimans et al. 2016)",
    "classes": "the feature network's classifier on the samples: fraction with top probability > 0.9 and each "
               "class's share",
    "mem": "fraction of near-copies of training images, d(NN1)/d(NN2) < 1/3 in pixel space",
}
DEFAULT_METRICS = ("fd", "kid", "pr", "is")


def parse_metrics(spec) -> tuple[str, ...]:
    """"fd,kid" or ["fd", "kid"] -> ("fd", "kid"); EvalError naming unknown metrics and the allowed ones."""
    names = [m.strip().lower() for m in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [m for m in names if m]
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise EvalError(f"unknown metric(s) {', '.join(map(repr, bad)) or '(none given)'}; allowed: "
                        f"{', '.join(METRICS)}")
    return tuple(dict.fromkeys(names))


def default_features(dataset: str) -> str:
    """The feature network used when none is named: the dataset's own classifier if there is one."""
    return "mnist" if dataset in ("mnist", "mnist-text") else "effnet"


def score(gen_features: np.ndarray, ref, metrics, *, gen_logits: np.ndarray | None = None,
          kid_subsets: int = 100, kid_subset_size: int | None = None, k: int = 3, seed: int = 2020) -> dict:
    """The metrics (except "mem") of generated features against a `Reference`, as a flat dict."""
    from noisecraft.eval import metrics as M

    out: dict = {}
    if "fd" in metrics:
        out["fd"] = M.frechet_distance(*M.gaussian_stats(gen_features), ref.mu, ref.sigma)
    if "fd_inf" in metrics:
        out["fd_inf"] = M.fd_infinity(gen_features, ref.mu, ref.sigma).fd_inf
    if "kid" in metrics:
        out["kid"], out["kid_std"] = M.kid(gen_features, ref.features, subsets=kid_subsets,
                                           subset_size=kid_subset_size, seed=seed)
    if "pr" in metrics:
        out["precision"], out["recall"] = M.precision_recall(gen_features, ref.features, k=k)
    if "is" in metrics:
        if gen_logits is None:
            raise EvalError("metric 'is' needs the feature network's logits")
        out["is"], out["is_std"] = M.inception_score(gen_logits, splits=min(10, len(gen_logits)))
    if "classes" in metrics:
        if gen_logits is None:
            raise EvalError("metric 'classes' needs the feature network's logits")
        shares = M.class_shares(gen_logits)
        out["confident"] = shares.confident
        out["class_shares"] = list(shares.shares)
        out["class_share_min"], out["class_share_max"] = min(shares.shares), max(shares.shares)
    return out


def evaluate(images, *, reference: str = "mnist", split: str = "train", features: str | None = None,
             metrics=DEFAULT_METRICS, root=None, resolution=None, channels=None, limit=None,
             device: str = "cpu", batch_size: int = 64, inception_weights=None, memorization_png=None,
             use_cache: bool = True, kid_subsets: int = 100, kid_subset_size: int | None = None,
             value_range: str = "signed") -> dict:
    """Evaluate images (N, C, H, W) against a reference dataset (any noisecraft.data dataset name; root,
    resolution, channels, limit as in load_dataset). value_range: the float images' range, as
    `noisecraft.eval.features.prepare_images` ("signed" [-1, 1] by default, "unit", "byte" or "auto").
    Returns a flat dict of numbers plus the settings."""
    from noisecraft.eval.features import get_extractor, prepare_images
    from noisecraft.eval.reference import load_reference

    metrics = parse_metrics(metrics)
    features = features or default_features(reference)
    ext = get_extractor(features, weights=inception_weights if features == "inception" else None,
                        device=device, batch_size=batch_size)
    images = prepare_images(images, value_range)
    ref = load_reference(reference, ext, split=split, root=root, resolution=resolution, channels=channels,
                         limit=limit, use_cache=use_cache)
    gen_features, gen_logits = ext.features_and_logits(images)
    out = score(gen_features, ref, metrics, gen_logits=gen_logits, kid_subsets=kid_subsets,
                kid_subset_size=kid_subset_size)
    if "mem" in metrics:
        out.update(memorization_metrics(images, gen_features, ref, reference, split, root, resolution, channels, limit,
                                 memorization_png))
    out.update({"num_samples": len(images), "num_reference": len(ref), "features": features,
                "reference": f"{reference}/{split}"})
    return out


def memorization_metrics(images, gen_features, ref, dataset, split, root, resolution, channels, limit, png) -> dict:
    """Near-copy fractions of `images` against the reference dataset's images (pixel and feature space);
    writes the neighbours PNG when `png` is a path."""
    from noisecraft.data import load_dataset
    from noisecraft.eval.memorization import memorization_report, save_neighbours_png

    train = load_dataset(dataset, root=root, resolution=resolution, channels=channels, split=split,
                         limit=limit).images
    report = memorization_report(images, train, sample_features=gen_features, train_features=ref.features)
    if png:
        save_neighbours_png(images, train, report, png)
    return {"near_copies": report.near_copies, "near_copies_features": report.near_copies_features}
