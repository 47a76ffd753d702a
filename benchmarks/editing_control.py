"""Structure control (ControlNet, Zhang et al. 2023) on MNIST: does a generated digit follow its edge map, and does
control cost sample quality? Results: benchmarks/editing_control.md, benchmarks/editing_control.png.

    python benchmarks/editing_control.py --base runs/bench-control/base --control runs/bench-control/canny

with the two runs trained first by (threads = 1, CPU):

    noisecraft train --preset mnist --steps 2000 --out runs/bench-control/base train.threads=1 \
        train.minutes=null train.seed=0
    noisecraft train --preset mnist-control-canny --steps 800 --out runs/bench-control/canny \
        conditioning.control_base=runs/bench-control/base train.threads=1 train.minutes=null

Measured on N held-out MNIST test images (never trained on):

- edge F1 with a tolerance of `--tolerance` pixels (chessboard distance): precision = the share of the generated
  image's Canny edge pixels within the tolerance of a map edge, recall = the share of map edge pixels within the
  tolerance of a generated edge, F1 = 2PR / (P + R), averaged over images. Maps and edges are the run's own
  Canny (`noisecraft.conditions.control.canny_map`).
- the reference F1 "real images reach": a real image against its own map is 1 by construction (the map is its
  Canny), so the aim is 0.8 absolute. For scale, the table also gives the F1 of the base model's uncontrolled
  samples (chance) and of another real test image of the same class (a real digit that does not follow the map).
- FD in the MNIST classifier's features (`noisecraft.eval.features.get_extractor("mnist")`) against the N test
  images: controlled samples vs the base model's unconditional samples (same sampler, steps and seeds). Aim: within
  1.2x of the base.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from noisecraft.conditions.control import Control, canny_map
from noisecraft.data import load_dataset
from noisecraft.eval.features import get_extractor
from noisecraft.eval.metrics import fd
from noisecraft.pipelines import Request, generate, load
from noisecraft.viz import save_grid


def dilate(m: torch.Tensor, r: int) -> torch.Tensor:
    """Binary dilation of (B, 1, H, W) maps by a (2r + 1)^2 square (chessboard distance <= r)."""
    return F.max_pool2d(m, 2 * r + 1, stride=1, padding=r) if r else m


def edge_f1(pred: torch.Tensor, target: torch.Tensor, r: int) -> np.ndarray:
    """Per-image F1 of edge maps pred vs target (B, 1, H, W) in {0, 1} with tolerance r pixels."""
    p, t = pred > 0.5, target > 0.5
    tp_p = (p & (dilate(target, r) > 0.5)).flatten(1).sum(1).double()
    tp_r = (t & (dilate(pred, r) > 0.5)).flatten(1).sum(1).double()
    prec = tp_p / p.flatten(1).sum(1).clamp(min=1)
    rec = tp_r / t.flatten(1).sum(1).clamp(min=1)
    f1 = torch.where(prec + rec > 0, 2 * prec * rec / (prec + rec).clamp(min=1e-12), torch.zeros_like(prec))
    return f1.numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="runs/bench-control/base")
    ap.add_argument("--control", default="runs/bench-control/canny")
    ap.add_argument("--num", type=int, default=500, help="held-out test images (default 500)")
    ap.add_argument("--scale", type=float, default=1.0, help="conditioning scale")
    ap.add_argument("--tolerance", type=int, default=1, help="edge F1 tolerance in pixels (default 1)")
    ap.add_argument("--sampler", default="heun")
    ap.add_argument("--steps", type=int, default=18)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/editing_control.json")
    ap.add_argument("--png", default="benchmarks/editing_control.png")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.time()

    test = load_dataset("mnist", split="test")
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(test), generator=g)[: a.num]
    real, labels = test.images[idx], test.labels[idx]
    maps = canny_map(real)  # (N, 1, 28, 28)

    base, ctrl = load(a.base), load(a.control)
    req = Request(sampler=a.sampler, steps=a.steps, seed=1000, num=a.num, batch_size=100)
    controlled = generate(ctrl, replace(req, conditions={"control": Control(maps, a.scale)})).images.clamp(-1, 1)
    uncontrolled = generate(base, req).images.clamp(-1, 1)

    f1_ctrl = edge_f1(canny_map(controlled), maps, a.tolerance)
    f1_base = edge_f1(canny_map(uncontrolled), maps, a.tolerance)
    # another real test image of the same class, for every image (a real digit not drawn from this map)
    pool = test.labels
    other = torch.empty_like(idx)
    for i, (j, y) in enumerate(zip(idx.tolist(), labels.tolist())):
        same = (pool == y).nonzero().flatten()
        same = same[same != j]
        other[i] = same[torch.randint(len(same), (1,), generator=g)]
    f1_other = edge_f1(canny_map(test.images[other]), maps, a.tolerance)
    f1_self = edge_f1(canny_map(real), maps, a.tolerance)

    ext = get_extractor("mnist")
    feats_real = ext(real)
    fd_ctrl, fd_base = fd(ext(controlled), feats_real), fd(ext(uncontrolled), feats_real)

    result = {
        "num": a.num, "scale": a.scale, "tolerance_px": a.tolerance, "sampler": a.sampler, "steps": a.steps,
        "base": str(a.base), "base_step": base.step, "control": str(a.control), "control_step": ctrl.step,
        "f1_controlled": float(f1_ctrl.mean()), "f1_base_uncontrolled": float(f1_base.mean()),
        "f1_real_same_class_other_image": float(f1_other.mean()), "f1_real_own_map": float(f1_self.mean()),
        "fd_controlled": fd_ctrl, "fd_base": fd_base, "fd_ratio": fd_ctrl / fd_base,
        "aim_f1": 0.8 * float(f1_self.mean()), "aim_fd_ratio": 1.2,
        "seconds": time.time() - t0,
    }
    if a.tolerance != 0:  # the same at zero tolerance (exact pixels), for a stricter view
        result["f1_at_0px"] = {"controlled": float(edge_f1(canny_map(controlled), maps, 0).mean()),
                               "base_uncontrolled": float(edge_f1(canny_map(uncontrolled), maps, 0).mean()),
                               "real_same_class_other_image": float(edge_f1(canny_map(test.images[other]), maps,
                                                                            0).mean())}
    result["f1_aim_reached"] = result["f1_controlled"] >= result["aim_f1"]
    result["fd_aim_reached"] = result["fd_ratio"] <= 1.2
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    k = 10  # rows: real image | its Canny map | controlled sample | the sample's Canny edges
    rows = torch.cat([real[:k], maps[:k] * 2 - 1, controlled[:k], canny_map(controlled[:k]) * 2 - 1])
    save_grid(rows, a.png, nrow=k, scale=3)
    print(f"wrote {a.out} and {a.png}")


if __name__ == "__main__":
    main()
