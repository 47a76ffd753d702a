"""Super-resolution on held-out glyphs: an SR3 stage with noise conditioning augmentation against bicubic and
nearest upsampling (results: benchmarks/editing_sr.md).

    python benchmarks/editing_sr.py --work runs/sr-bench --steps 700            # trains glyphs-sr-32, then scores
    python benchmarks/editing_sr.py --work runs/sr-bench --run runs/glyphs-sr-32  # score an existing SR run

1. Training (unless --run): `noisecraft train --preset glyphs-sr-32 --steps STEPS train.threads=1` (16 -> 32 on
   the glyphs' train split, rendered natively at 32x32).
2. Held-out images: the glyphs' test split at the SR run's output size (32x32 for glyphs-sr-32, 64x64 for
   glyphs-sr-64; every 10th item of each class; no font variant of them is trained on). The low-resolution inputs
   are their area downsampling by the run's factor (the condition's own `downsample`).
3. Each method upsamples the inputs to the output size: nearest, bicubic (clamped to [-1, 1]), and the SR run via
   `noisecraft.editing.upscale` (its default sampler and steps, seed 0, at each --aug-levels level).
4. Metrics against the real images: PSNR and SSIM (skimage.metrics, data range [0, 1], per image, mean),
   and FD of EfficientNet-Lite0 ("effnet") features (noisecraft.eval.metrics.fd) of all outputs against all real
   images. Aim (issue 19): FD of SR >= 5x closer to real than bicubic's, i.e. FD(bicubic) / FD(SR) >= 5.
Writes WORK/results.json and WORK/editing_sr.png (rows: low-res (nearest-enlarged) | bicubic | SR | real);
--publish copies them to benchmarks/results/editing_sr.json and benchmarks/editing_sr.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def train(work: Path, steps: int) -> Path:
    out = work / "glyphs-sr-32"
    cmd = [sys.executable, "-m", "noisecraft", "train", "--preset", "glyphs-sr-32", "--steps", str(steps),
           "--out", str(out), "train.threads=1"]
    t0 = time.time()
    subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    print(f"trained in {time.time() - t0:.0f} s")
    return out


def metrics(out, real) -> dict:
    """PSNR / SSIM per image on [0, 1] (mean), for (N, 1, H, W) tensors in [-1, 1]."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a = ((out.clamp(-1, 1) + 1) / 2).numpy()[:, 0].astype(np.float64)
    b = ((real + 1) / 2).numpy()[:, 0].astype(np.float64)
    psnr = [peak_signal_noise_ratio(y, x, data_range=1.0) for x, y in zip(a, b)]
    ssim = [structural_similarity(y, x, data_range=1.0) for x, y in zip(a, b)]
    return {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim))}


def main() -> None:
    import torch
    import torch.nn.functional as F

    from noisecraft.conditions.low_res import downsample, upsample
    from noisecraft.data.glyphs import load_glyphs
    from noisecraft.editing.upscale import upscale
    from noisecraft.eval import fd, get_extractor
    from noisecraft.pipelines import Request, load
    from noisecraft.viz import save_grid

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="runs/sr-bench")
    p.add_argument("--run", help="an SR run to score (default: train glyphs-sr-32 in WORK)")
    p.add_argument("--steps", type=int, default=700, help="training steps of glyphs-sr-32")
    p.add_argument("--num", type=int, default=496, help="held-out images scored (the test split has 496)")
    p.add_argument("--aug-levels", type=float, nargs="+", default=[0.0, 0.05])
    p.add_argument("--publish", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    run_dir = Path(args.run) if args.run else train(work, args.steps)

    run = load(run_dir)
    sr = run.conditions.get("low-res")  # the stage's output size and factor (glyphs-sr-32: 32, 2; -sr-64: 64, 2)
    size, factor = sr.size[0], sr.factor
    real = load_glyphs(split="test", resolution=size).images[: args.num]  # (N, 1, size, size)
    low = downsample(real, factor)  # (N, 1, size / factor, size / factor)
    outputs = {"nearest": F.interpolate(low, scale_factor=factor, mode="nearest"),
               "bicubic": upsample(low, factor).clamp(-1, 1)}
    timings = {}
    for level in args.aug_levels:
        t0 = time.time()
        outputs[f"sr (aug {level:g})"] = upscale(run, low, Request(num=len(low), seed=0), aug_level=level).images
        timings[f"sr (aug {level:g})"] = time.time() - t0
    ext = get_extractor("effnet")
    ref = ext(real)
    results = {"run": str(run_dir), "model_step": run.step, "size": size, "factor": factor, "num": len(real),
               "sampler": run.config.sample.sampler,
               "sampling_steps": run.config.sample.steps, "methods": {}}
    for name, out in outputs.items():
        m = metrics(out, real)
        m["fd"] = fd(ext(out.clamp(-1, 1)), ref)
        if name in timings:
            m["seconds"] = timings[name]
        results["methods"][name] = m
        print(f"{name:>14}: PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}, FD {m['fd']:.2f}")
    # the floor: FD of other renders of the same held-out glyphs (render seed 1: new jitter) against the real ones
    results["fd_floor_real_rerender"] = fd(ext(load_glyphs(split="test", resolution=size, seed=1).images[: args.num]),
                                           ref)
    bic = results["methods"]["bicubic"]["fd"]
    for m in results["methods"].values():
        m["fd_bicubic_over_fd"] = bic / m["fd"] if m["fd"] > 0 else float("inf")
    srs = [k for k in results["methods"] if k.startswith("sr")]
    best = max(srs, key=lambda k: results["methods"][k]["fd_bicubic_over_fd"])
    results["aim"] = {"best": best, "ratio": results["methods"][best]["fd_bicubic_over_fd"],
                      "reached": results["methods"][best]["fd_bicubic_over_fd"] >= 5}
    print(json.dumps(results["aim"]), "FD floor", results["fd_floor_real_rerender"])
    (work / "results.json").write_text(json.dumps(results, indent=2))
    k = 12
    rows = [outputs["nearest"][:k], outputs["bicubic"][:k], outputs[best][:k].clamp(-1, 1), real[:k]]
    save_grid(torch.cat(rows), work / "editing_sr.png", nrow=k)
    if args.publish:
        (REPO / "benchmarks" / "results").mkdir(exist_ok=True)
        name = "editing_sr" if size == 32 else f"editing_sr_{size}"  # the 16 -> 32 stage keeps its old names
        shutil.copy(work / "results.json", REPO / "benchmarks" / "results" / f"{name}.json")
        shutil.copy(work / "editing_sr.png", REPO / "benchmarks" / f"{name}.png")


if __name__ == "__main__":
    main()
