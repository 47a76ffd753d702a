"""Calibration of noisecraft.eval on MNIST: what FD, KID, precision and recall read for real, degraded and
noise images at several sample sizes, so that a model's numbers can be read against them.

Reference: the MNIST "train" split (4500 images; its statistics come from the cache, computed on first use).
Candidate sets, each a random subset of n images (fixed seed; smaller n are prefixes of larger ones):

    real held-out   the "test" split (500 images: n is capped at 500; the MNIST bundled with noisecraft has
                    5000 digits, 4500 train + 500 test, so no held-out set of 1000 or 5000 exists)
    real train      images of the reference itself (n <= 4500): the estimator's own floor at n
    blur s=1, s=2   all 5000 digits blurred by a Gaussian of s pixels (replicate padding)
    noise           i.i.d. uniform pixels in [-1, 1]

    python benchmarks/eval_calibration.py                              # mnist + effnet features
    python benchmarks/eval_calibration.py --features mnist --update benchmarks/eval.md

EfficientNet features cost ~0.1 s per image on one CPU thread, so sets needing new effnet features are
limited to n <= --effnet-max (default 1000). KID: 100 subsets of min(1000, n) (torch-fidelity's default).
--update replaces the part of the file between `<!-- calibration:start -->` and `<!-- calibration:end -->`.
"""

from __future__ import annotations

import argparse
import math
import re
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from noisecraft.data import load_dataset
from noisecraft.eval import metrics
from noisecraft.eval.features import get_extractor
from noisecraft.eval.reference import load_reference


def gaussian_blur(x: torch.Tensor, s: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) with standard deviation s pixels, radius ceil(3 s)."""
    r = math.ceil(3 * s)
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-t**2 / (2 * s**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def candidate_pools(seed: int) -> dict[str, torch.Tensor | None]:
    """Name -> images (None: the reference's own images, whose features are already known)."""
    everything = load_dataset("mnist", split="all").images
    gen = torch.Generator().manual_seed(seed)
    return {"real held-out (test)": load_dataset("mnist", split="test").images,
            "real train (= reference)": None,
            "blur s=1": gaussian_blur(everything, 1.0),
            "blur s=2": gaussian_blur(everything, 2.0),
            "uniform noise": torch.rand(5000, 1, 28, 28, generator=gen) * 2 - 1}


def rows_for(pool_size: int, sizes: list[int], limit: int) -> list[int]:
    """The n to report for a pool: each size capped at the pool (once), and at `limit`."""
    ns = sorted({min(n, pool_size) for n in sizes if min(n, pool_size) <= limit})
    return ns


def score_row(x: np.ndarray, ref) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rank warnings at n <= D are the point of the small-n rows
        fd = metrics.frechet_distance(*metrics.gaussian_stats(x), ref.mu, ref.sigma)
    k = metrics.kid(x, ref.features, subset_size=min(1000, len(x)))
    pr = metrics.precision_recall(x, ref.features)
    return {"fd": fd, "kid": k.mean, "kid_std": k.std, "precision": pr.precision, "recall": pr.recall}


def calibrate(feature: str, sizes: list[int], limit: int, seed: int) -> list[dict]:
    ext = get_extractor(feature)
    t0 = time.monotonic()
    ref = load_reference("mnist", ext, split="train")
    print(f"[{feature}] reference: {len(ref)} images, D = {ref.features.shape[1]} ({time.monotonic() - t0:.0f} s)",
          flush=True)
    out = []
    for name, pool in candidate_pools(seed).items():
        size = len(ref) if pool is None else len(pool)
        ns = rows_for(size, sizes, size if pool is None else limit)
        if not ns:
            continue
        perm = np.random.default_rng(seed).permutation(size)[:max(ns)]
        t0 = time.monotonic()
        feats = ref.features[perm] if pool is None else ext(pool[torch.from_numpy(perm)])
        for n in ns:
            row = {"features": feature, "set": name, "n": n, **score_row(feats[:n], ref)}
            out.append(row)
            print(f"[{feature}] {name:26s} n={n:5d}  FD {row['fd']:9.3f}  KID {row['kid']:.5f} +- {row['kid_std']:.5f}"
                  f"  P {row['precision']:.3f}  R {row['recall']:.3f}  ({time.monotonic() - t0:.0f} s)", flush=True)
    return out


def markdown(rows: list[dict]) -> str:
    lines = ["| features | candidate set | n | FD | KID (+- std over subsets) | precision | recall |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        fd = 0.0 if abs(r["fd"]) < 1e-6 else r["fd"]  # round-off around the exact 0 (a set against itself)
        lines.append(f"| {r['features']} | {r['set']} | {r['n']} | {fd:.4g} | {r['kid']:.3g} +- {r['kid_std']:.2g} | "
                     f"{r['precision']:.3f} | {r['recall']:.3f} |")
    return "\n".join(lines)


def update(path: Path, table: str) -> None:
    text = path.read_text()
    pattern = re.compile(r"(<!-- calibration:start -->\n).*?(<!-- calibration:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path} has no <!-- calibration:start --> ... <!-- calibration:end --> section")
    path.write_text(pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", default="mnist,effnet")
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--effnet-max", type=int, default=1000, help="largest n needing new effnet features")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--update", type=Path, help="write the table into this markdown file's calibration section")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for feature in args.features.split(","):
        limit = args.effnet_max if feature == "effnet" else max(sizes)
        rows += calibrate(feature, sizes, limit, args.seed)
    table = markdown(rows)
    print(table)
    if args.update:
        update(args.update, table)
        print(f"updated {args.update}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
