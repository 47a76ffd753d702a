"""Latent vs pixel diffusion on 64x64 images at matched wall-clock (results: benchmarks/latent_vs_pixel.md).

    python benchmarks/latent_vs_pixel.py --dataset glyphs --autoencoder runs/ae-glyphs-64 --work runs/lvp-g \
        --minutes 30 --num 512
    python benchmarks/latent_vs_pixel.py --dataset emoji --autoencoder runs/ae-64 --work runs/lvp --minutes 10

1. Reference features: EfficientNet-Lite0 ("effnet") features of every 3rd image of the dataset's train split
   at 64x64 (cached in WORK/reference_effnet.npy).
2. Two `noisecraft train` processes run *at the same time* (so they share whatever load the machine has), with
   train.threads=1: the pixel model (preset emoji-64 / glyphs-64) and the latent model (preset ldm-64 /
   ldm-glyphs-64 with data.autoencoder=AUTOENCODER). Stage 1 trains for minutes * fraction, stage 2 resumes
   both (exact resume) for the remaining minutes; after each stage both are evaluated, so FD is known at 1/3
   and at all of the compute.
3. Evaluation of a run: `noisecraft sample` (same sampler, steps, seeds for both; a latent model's samples are
   decoded through its autoencoder) in its own process, timed; then FD of the samples' effnet features against
   the reference.

Measured: training images/s (steps * batch / training seconds from the run's log), sampling images/s (num /
wall time of the sampling process, model loading included), peak resident memory of each training and sampling
process (VmHWM polled from /proc), FD; and for the autoencoder its own training time, steps and reconstruction
metrics (from its run directory), plus the one-time cost of encoding the dataset.
Writes WORK/results.json, and WORK/{pixel,latent}_samples.png grids (copied to benchmarks/results/ with --publish).
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
RESULTS = REPO / "benchmarks" / "results"
# dataset -> (pixel preset, latent preset, load_dataset keyword arguments of its 64x64 train split)
STUDIES = {
    "emoji": ("emoji-64", "ldm-64", {"split": "train"}),
    "glyphs": ("glyphs-64", "ldm-glyphs-64", {"split": "train", "resolution": 64}),
}


class PeakRSS:
    """Peak resident memory of one process: its VmHWM (/proc/PID/status), polled every 0.2 s until it exits.
    (ru_maxrss from wait4 is useless here: Linux carries the parent's high-water mark into a forked child
    across exec, so every child would report at least this script's own ~0.8 GB.)"""

    def __init__(self, pid: int):
        import threading

        self.pid, self.peak_kib, self._done = pid, 0, False
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self):
        while not self._done:
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            except (OSError, ValueError):
                pass
            time.sleep(0.2)

    def stop(self) -> float:
        self._done = True
        self._thread.join()
        return self.peak_kib / 1024  # MiB


def run_process(cmd: list[str], log: Path) -> tuple[int, float, float]:
    """Start cmd; wait; (exit code, wall seconds, peak RSS MiB) of that process alone."""
    t0 = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        peak = PeakRSS(proc.pid)
        proc.wait()
    return proc.returncode, time.monotonic() - t0, peak.stop()


def run_concurrently(cmds: dict[str, list[str]], work: Path, tag: str) -> dict:
    """Start all commands at once; wait for each; {name: {rc, wall_s, maxrss_mib}}."""
    t0 = time.monotonic()
    procs = {}
    for name, cmd in cmds.items():
        f = open(work / f"{tag}-{name}.log", "w")
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        procs[name] = (proc, f, PeakRSS(proc.pid))
    out = {}
    for name, (proc, f, peak) in procs.items():
        proc.wait()
        f.close()
        out[name] = {"rc": proc.returncode, "wall_s": time.monotonic() - t0, "maxrss_mib": peak.stop()}
        if out[name]["rc"] != 0:
            sys.exit(f"{name} failed: see {work / f'{tag}-{name}.log'}")
    return out


def reference_features(work: Path, dataset: str) -> np.ndarray:
    path = work / "reference_effnet.npy"
    if path.is_file():
        return np.load(path)
    from noisecraft.data import load_dataset
    from noisecraft.eval import get_extractor

    images = load_dataset(dataset, **STUDIES[dataset][2]).images[::3]
    feats = get_extractor("effnet")(images)
    np.save(path, feats)
    return feats


def train_stats(run: Path) -> dict:
    """Steps, training seconds and images/s from the run's log (time = seconds since the stage started)."""
    cfg = json.loads((run / "config.json").read_text())
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    # stages restart the clock: sum the last time of each stage
    seconds, last = 0.0, None
    for r in log:
        if last is not None and r["time"] < last["time"]:
            seconds += last["time"]
        last = r
    seconds += last["time"]
    steps = last["step"]
    batch = cfg["train"]["batch_size"]
    return {"steps": steps, "train_seconds": seconds, "train_images_per_s": steps * batch / seconds,
            "batch_size": batch, "loss_smooth": last.get("loss_smooth")}


def evaluate(run: Path, work: Path, tag: str, args, ref: np.ndarray) -> dict:
    from noisecraft.data import load_image
    from noisecraft.eval import fd, get_extractor

    out_dir = work / f"samples-{tag}"
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "noisecraft", "sample", "--checkpoint", str(run), "--num", str(args.num),
           "--sampler", args.sampler, "--steps", str(args.steps), "--schedule", "karras", "--seed", "0",
           "--batch-size", "64", "--out", str(out_dir)]
    env_threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    rc, wall, rss = run_process(cmd, work / f"sample-{tag}.log")
    if env_threads is None:
        del os.environ["OMP_NUM_THREADS"]
    if rc != 0:
        sys.exit(f"sampling {run} failed: see {work / f'sample-{tag}.log'}")
    import torch

    files = sorted(out_dir.glob("*.png"))
    images = torch.stack([load_image(f) for f in files])  # (N, C, 64, 64)
    from noisecraft.viz import save_grid

    save_grid(images[:64], work / f"{tag}.png", nrow=8)
    return {"fd": float(fd(get_extractor("effnet")(images), ref)), "num": len(files),
            "sample_seconds": wall, "sample_images_per_s": len(files) / wall, "sample_maxrss_mib": rss}


def floors(work: Path, dataset: str, ae_dir: Path, num: int, ref: np.ndarray) -> dict:
    """FD at the samples' n of `num` held-out real images (test split), and of their reconstructions through
    the autoencoder: what a perfect pixel model and a perfect latent model would score against the reference."""
    import torch

    from noisecraft.autoencoder import load_autoencoder
    from noisecraft.data import load_dataset
    from noisecraft.eval import fd, get_extractor

    images = load_dataset(dataset, **{**STUDIES[dataset][2], "split": "test"}).images[:num]
    ae = load_autoencoder(ae_dir)
    with torch.no_grad():
        recon = torch.cat([ae.decode(ae.encode(b)) for b in images.split(64)]).clamp(-1, 1)
    extract = get_extractor("effnet")
    return {"num": len(images), "fd_real_test": float(fd(extract(images), ref)),
            "fd_autoencoder_reconstructions": float(fd(extract(recon), ref))}


def autoencoder_stats(ae_dir: Path) -> dict:
    from safetensors import safe_open

    log = [json.loads(line) for line in (ae_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in log if r.get("kind") != "eval"]
    with safe_open(str(ae_dir / "checkpoint.safetensors"), framework="pt") as f:
        state = json.loads(f.metadata()["state"])
    cfg = json.loads((ae_dir / "config.json").read_text())
    seconds, last = 0.0, None  # a resumed run restarts the clock: sum the last time of each stage
    for r in train:
        if last is not None and r["time"] < last["time"]:
            seconds += last["time"]
        last = r
    seconds += last["time"] if last else 0.0
    return {"steps": state["step"], "train_seconds": seconds,
            "batch_size": cfg["train"]["batch_size"], "metrics": state["metrics"],
            "scaling_factor": state["scaling_factor"], "config": cfg["autoencoder"]}


def train_cmd(preset: str, out: Path, minutes: float, resume: bool, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "noisecraft", "train", "--preset", preset, "--minutes", f"{minutes:.4f}",
           "--out", str(out), "train.threads=1", "sample.num=16", *extra]
    return cmd + (["--resume"] if resume else [])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(STUDIES), default="emoji", help="the 64x64 data (default emoji)")
    p.add_argument("--autoencoder", required=True, help="the autoencoder run directory (ae-64 / ae-glyphs-64)")
    p.add_argument("--work", required=True, help="working directory for the runs")
    p.add_argument("--minutes", type=float, default=10.0, help="training budget per model (default 10)")
    p.add_argument("--fraction", type=float, default=1 / 3, help="first evaluation after this share of it")
    p.add_argument("--num", type=int, default=256, help="samples per FD (default 256)")
    p.add_argument("--sampler", default="heun")
    p.add_argument("--steps", type=int, default=10, help="sampling steps (default 10: 19 NFE with heun)")
    p.add_argument("--publish", action="store_true", help="copy grids and results.json to benchmarks/results/")
    p.add_argument("--floors-only", action="store_true",
                   help="only add the FD floors (held-out real images, their AE reconstructions) to WORK/results.json")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ae = Path(args.autoencoder).resolve()
    if args.floors_only:
        results = json.loads((work / "results.json").read_text())
        results["floors"] = floors(work, args.dataset, ae, args.num, reference_features(work, args.dataset))
        (work / "results.json").write_text(json.dumps(results, indent=2))
        print("floors", json.dumps(results["floors"]))
        return 0
    pixel_preset, latent_preset, data_kwargs = STUDIES[args.dataset]
    runs = {"pixel": (work / "pixel", pixel_preset, []),
            "latent": (work / "latent", latent_preset, [f"data.autoencoder={ae}"])}
    results = {"conditions": {"dataset": args.dataset, "cpu_threads_per_process": 1, "cpus": os.cpu_count(),
                              "num": args.num,
                              "sampler": args.sampler, "sampling_steps": args.steps, "minutes": args.minutes,
                              "fraction": args.fraction, "load_avg_start": os.getloadavg()},
               "autoencoder": autoencoder_stats(ae)}
    ref = reference_features(work, args.dataset)
    results["conditions"]["num_reference"] = len(ref)
    results["floors"] = floors(work, args.dataset, ae, args.num, ref)
    t_enc = time.monotonic()
    from noisecraft.autoencoder.latents import encode_dataset
    from noisecraft.data import load_dataset

    encode_dataset(load_dataset(args.dataset, **data_kwargs), ae)  # fills the latent cache (timed: one-time cost)
    results["autoencoder"]["encode_dataset_seconds"] = time.monotonic() - t_enc
    for stage, minutes in ((1, args.minutes * args.fraction), (2, args.minutes * (1 - args.fraction))):
        cmds = {name: train_cmd(preset, out, minutes, stage == 2, extra) for name, (out, preset, extra) in runs.items()}
        procs = run_concurrently(cmds, work, f"train{stage}")
        for name, (out, _, _) in runs.items():
            r = {**train_stats(out), "train_maxrss_mib": procs[name]["maxrss_mib"], "load_avg": os.getloadavg()}
            r.update(evaluate(out, work, f"{name}-stage{stage}", args, ref))
            results.setdefault(name, []).append(r)
            print(name, stage, json.dumps(r), flush=True)
        (work / "results.json").write_text(json.dumps(results, indent=2))
    if args.publish:
        RESULTS.mkdir(exist_ok=True)
        prefix = "latent_vs_pixel" + ("" if args.dataset == "emoji" else f"_{args.dataset}")
        for name in runs:  # after all of the budget, and after its first part
            shutil.copy(work / f"{name}-stage2.png", RESULTS / f"{prefix}_{name}_samples.png")
            shutil.copy(work / f"{name}-stage1.png", RESULTS / f"{prefix}_{name}_stage1_samples.png")
        shutil.copy(ae / "reconstructions.png", RESULTS / f"{prefix}_reconstructions.png")
        shutil.copy(ae / "metrics.png", RESULTS / f"{prefix}_ae_metrics.png")
        shutil.copy(work / "results.json", RESULTS / f"{prefix}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
