"""Same-class recall@k of similarity search on MNIST: diffusion features vs raw pixels vs EffNet features.

    python benchmarks/search.py --checkpoint runs/search-model --sigmas 0.1 0.25 0.5 1.0 --layers mid down1 up1 \
        --pools 1 2 --effnet --untrained --out benchmarks/results/search.json

The index holds the MNIST train split (4500 images), the queries are the held-out test split (500 images;
noisecraft.data's split rule). For each query, recall@k is the fraction of its k nearest indexed items
(noisecraft.search: cosine similarity, exact faiss IndexFlatIP) that have the query's label; the table also
gives the 1-NN accuracy (the label of the nearest item). --untrained adds diffusion features from a network of
the run's architecture at its random initialisation (seed 0), to separate what training adds from what the
architecture alone does. Prints a markdown table; --out writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from noisecraft.data import load_dataset
from noisecraft.pipelines import load
from noisecraft.search import DiffusionEmbedder, EffNetEmbedder, PixelEmbedder, build_index, search


def evaluate(name: str, embedder, train, test, k: int, run=None) -> dict:
    """Index the train split, query the test split: recall@k and 1-NN accuracy."""
    t0 = time.perf_counter()
    index = build_index(embedder, train.images, labels=train.labels)
    _, ids = search(index, test.images, k, embedder=embedder)
    seconds = time.perf_counter() - t0
    train_labels, test_labels = np.asarray(train.labels), np.asarray(test.labels)
    same = train_labels[ids] == test_labels[:, None]  # (Q, k)
    row = {"features": name, "dim": index.meta["dim"], f"recall@{k}": float(same.mean()),
           "1nn_accuracy": float(same[:, 0].mean()), "seconds": round(seconds, 1)}
    print(f"| {name} | {row['dim']} | {100 * row[f'recall@{k}']:.1f}% | {100 * row['1nn_accuracy']:.1f}% | "
          f"{seconds:.1f} |", flush=True)
    return row


def untrained_copy(run):
    """The run with its network re-initialised (seed 0): the same architecture, no training."""
    from dataclasses import replace

    from noisecraft.build import build_denoiser

    torch.manual_seed(0)
    denoiser = build_denoiser(run.config).eval().requires_grad_(False)
    return replace(run, denoiser=denoiser, path=None, step=0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="the MNIST run (e.g. noisecraft train --preset mnist)")
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    p.add_argument("--layers", nargs="+", default=["mid"])
    p.add_argument("--pools", type=int, nargs="+", default=[1])
    p.add_argument("--draws", type=int, default=1)
    p.add_argument("--noise", nargs="+", default=["fixed"], choices=["fixed", "inversion"],
                   help="how x_sigma is formed (noisecraft.search): fixed noise and/or ODE inversion")
    p.add_argument("--no-pixels", action="store_true", help="skip the raw-pixel baseline")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--effnet", action="store_true", help="also the EffNet-Lite0 baseline (slow on a CPU)")
    p.add_argument("--untrained", action="store_true", help="also the randomly initialised network")
    p.add_argument("--limit", type=int, default=None, help="first LIMIT items of each split (smoke runs)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="write the rows as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train, test = (load_dataset("mnist", split=s, limit=args.limit) for s in ("train", "test"))
    run = load(args.checkpoint)
    print(f"run {args.checkpoint}: step {run.step}; index {len(train)} train images, {len(test)} test queries\n")
    print(f"| features | dim | recall@{args.k} | 1-NN accuracy | seconds |\n|---|---|---|---|---|")
    rows = [] if args.no_pixels else [evaluate("raw pixels", PixelEmbedder(), train, test, args.k)]
    runs = [("diffusion", run)] + ([("untrained", untrained_copy(run))] if args.untrained else [])
    for label, r in runs:
        for layer in args.layers:
            for pool in args.pools:
                for sigma, noise in [(s, n) for n in args.noise for s in args.sigmas]:
                    draws = args.draws if noise == "fixed" else 1
                    emb = DiffusionEmbedder(r, sigma=sigma, layer=layer, pool=pool, draws=draws, noise=noise)
                    name = (f"{label} {layer} pool {pool} sigma {sigma:g}" + (f" x{draws}" if draws > 1 else "")
                            + (", inversion" if noise == "inversion" else ""))
                    rows.append({**evaluate(name, emb, train, test, args.k), "sigma": sigma, "layer": layer,
                                 "pool": pool, "draws": draws, "noise": noise, "run_step": r.step})
    if args.effnet:
        rows.append(evaluate("EffNet-Lite0", EffNetEmbedder(), train, test, args.k))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"checkpoint": args.checkpoint, "step": run.step, "rows": rows},
                                             indent=1) + "\n")


if __name__ == "__main__":
    main()
