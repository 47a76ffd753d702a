"""Point clouds: a trained `points-shapes` run against held-out shapes, with a train-vs-test data baseline
(results: benchmarks/modalities.md, "Point clouds").

    noisecraft train --preset points-shapes --out runs/points-shapes-bench
    python benchmarks/points_shapes.py --run runs/points-shapes-bench --png benchmarks/points_shapes.png

1. Reference: the first PER_CLASS clouds of each class of the `shapes-points` test split (never trained on).
2. Generated: PER_CLASS clouds per class from the run (class-conditional, its default sampler and steps, seeds
   1000..), so both sets have the same classes in the same numbers.
3. Baseline: the first PER_CLASS clouds of each class of the train split (real data against real data: the figures
   a perfect model would reach with sets of this size).
4. MMD, COV, 1-NNA with Chamfer and exact EMD (`noisecraft.points.metrics`, PointFlow's definitions).
Prints one JSON object; --png writes a grid of 2 generated clouds per class.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from noisecraft.data import load_dataset
from noisecraft.files import atomic_write_bytes
from noisecraft.points.io import render_png
from noisecraft.points.metrics import DISTANCES, distance_matrix, mmd_cov, one_nna
from noisecraft.points.shapes import KINDS


def per_class(ds, n: int) -> torch.Tensor:
    """The first n clouds of each class, classes in order."""
    return torch.cat([ds.images[ds.labels == k][:n] for k in range(len(KINDS))])


def scores(gen: torch.Tensor, ref: torch.Tensor, d_rr: dict[str, torch.Tensor]) -> dict[str, float]:
    out = {}
    for name in DISTANCES:
        d_gr = distance_matrix(gen, ref, name)
        out[f"mmd-{name}"], out[f"cov-{name}"] = mmd_cov(d_gr)
        out[f"1-nna-{name}"] = one_nna(distance_matrix(gen, None, name), d_gr, d_rr[name])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a points-shapes run folder")
    parser.add_argument("--per-class", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the conditional model)")
    parser.add_argument("--png", type=Path, default=None)
    args = parser.parse_args()
    from noisecraft.pipelines import Request, generate, load

    t0 = time.time()
    ref = per_class(load_dataset("shapes-points", split="test"), args.per_class)
    base = per_class(load_dataset("shapes-points", split="train"), args.per_class)
    run = load(args.run)
    labels = tuple(k for k in range(len(KINDS)) for _ in range(args.per_class))
    result = generate(run, Request(class_ids=labels, num=len(labels), seed=1000, guidance=args.guidance))
    gen = result.images
    t_gen = time.time() - t0
    d_rr = {name: distance_matrix(ref, None, name) for name in DISTANCES}
    report = {"run": args.run, "step": result.parameters["model_step"], "sampler": result.parameters["sampler"],
              "steps": result.parameters["steps"], "guidance": args.guidance, "per_class": args.per_class,
              "model": scores(gen, ref, d_rr), "train-vs-test": scores(base, ref, d_rr),
              "seconds_generate": round(t_gen, 1), "seconds_total": round(time.time() - t0, 1)}
    print(json.dumps(report, indent=1))
    if args.png is not None:
        pick = [k * args.per_class + i for k in range(len(KINDS)) for i in range(2)]
        titles = [f"{KINDS[labels[i]]} (seed {result.seeds[i]})" for i in pick]
        atomic_write_bytes(args.png, render_png(gen[pick], titles, columns=4))


if __name__ == "__main__":
    main()
