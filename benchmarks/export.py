"""Denoiser calls per second on the CPU: onnxruntime on the exported graph vs torch eager, side by side.

    python benchmarks/export.py --threads 2 --repeats 30

The quickstart-sized network (preset "mnist": 1x28x28 U-Net, attention at 7x7) with random weights (speed does
not depend on them), exported by `noisecraft.interop.onnx_export.export_denoiser`. For each batch size the two
back-ends are timed in alternation, call by call, after warm-up; the figure is the median over the repeats, in
images per second (batch / seconds per denoiser call). Same thread count for both. The two outputs are compared
once (max |difference|). Results: benchmarks/export.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from noisecraft.build import adapt_config, build_denoiser
from noisecraft.interop.onnx_export import export_denoiser
from noisecraft.pipelines.run import Run
from noisecraft.presets import get_preset


def quickstart_run() -> Run:
    config = adapt_config(get_preset("mnist"), (1, 28, 28))
    denoiser = build_denoiser(config).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in denoiser.net.parameters():  # non-zero output layers (fresh ones are zero-initialised)
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    from noisecraft.conditions import conditions_for

    return Run(denoiser, config, (1, 28, 28), conditions_for(config))


def time_pair(run, session, batch: int, repeats: int, warmup: int) -> dict:
    x = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(batch))
    sigma = torch.full((batch,), 2.0)
    feed = {"x": x.numpy(), "sigma": sigma.numpy()}
    torch_s, ort_s = [], []
    with torch.no_grad():
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            ref = run.denoiser(x, sigma)
            t1 = time.perf_counter()
            out = session.run(None, feed)[0]
            t2 = time.perf_counter()
            if i >= warmup:
                torch_s.append(t1 - t0)
                ort_s.append(t2 - t1)
    t, o = statistics.median(torch_s), statistics.median(ort_s)
    return {"batch": batch, "torch_img_s": batch / t, "onnxruntime_img_s": batch / o, "ratio": t / o,
            "torch_ms": 1e3 * t, "onnxruntime_ms": 1e3 * o, "max_abs_diff": float(np.abs(out - ref.numpy()).max())}


def main() -> None:
    import onnxruntime as ort

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--out", default="benchmarks/results/export.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run = quickstart_run()
    params = sum(q.numel() for q in run.denoiser.net.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        path = export_denoiser(run, Path(tmp) / "denoiser.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        rows = [time_pair(run, session, b, args.repeats, args.warmup) for b in args.batches]
    info = {"params": params, "threads": args.threads, "repeats": args.repeats, "torch": torch.__version__,
            "onnxruntime": ort.__version__, "cpu": platform.processor() or platform.machine(),
            "load_average": os.getloadavg()[0], "rows": rows}
    print(f"params {params:,}, {args.threads} threads, torch {torch.__version__}, onnxruntime {ort.__version__}, "
          f"load {info['load_average']:.2f}")
    print("| batch | torch eager img/s | onnxruntime img/s | ratio | max abs diff |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['torch_img_s']:.1f} | {r['onnxruntime_img_s']:.1f} | {r['ratio']:.2f}x | "
              f"{r['max_abs_diff']:.1e} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
