"""Sampler accuracy per network call on a TRAINED model: noisecraft vs diffusers on MNIST.

The companion of `benchmarks/samplers.py` (the exact Gaussian mixture): the same comparison with a trained
U-Net, where no closed-form solution exists.

Model: a noisecraft MNIST checkpoint (EDM preconditioning, continuous in sigma). The recorded results
(samplers_mnist.md) use the quickstart U-Net trained for 2210 steps at batch 32 (loss 0.163):

    noisecraft train --preset mnist --steps 2210 --out runs/mnist-2210 train.threads=1 train.batch_size=32

Problem: the model's probability-flow ODE from sigma_max = 14.61 (Stable Diffusion's scaled-linear table,
beta 0.00085 .. 0.012, T = 1000, so every diffusers scheduler applies unchanged) to 0, from fixed unit
noise (seed 1234). Both libraries drive the same trained denoiser D(x, sigma):

- noisecraft: our sampler functions call D directly (sigmas from `get_sigmas` on that table);
- diffusers: each scheduler through its own loop, with D presented as an eps-prediction VP network
  eps(x_t, t) = (x - D(x, sigma)) / sigma, x = x_t sqrt(1 + sigma^2). The network is continuous in sigma,
  so it is told the scheduler's own sigma ("oracle"; for DDIM/PNDM, whose timesteps are integers, the
  table's sigma at t) - the most favourable setting for diffusers' fractional/rounded timesteps.
  Configurations whose first level is not sigma_max ("leading" spacing) are left out: each other start
  would need its own reference solution.

Reference: our adaptive RK45 (`samplers.sample_ode`, float64 state, Dormand-Prince) at rtol = atol = 1e-6;
its own error is measured against rtol = atol = 1e-7 on the same noise and reported (it must be far below
the errors being ranked). Metrics: RMSE over all pixels in [-1, 1] units; "flips" = samples that the
bundled MNIST classifier labels differently from the reference (a sample that changed digit); RMSE over
the rest. NFE is counted on the denoiser, never assumed.

    python benchmarks/samplers_mnist.py --checkpoint runs/mnist-2200
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import samplers as base  # noqa: E402  (benchmarks/samplers.py: tables, diffusers loop, report pieces)
from noisecraft.pipelines import load  # noqa: E402
from noisecraft.schedules import build_schedule  # noqa: E402
from noisecraft.schedules.optimize import reference_solution  # noqa: E402

NFES = (5, 8, 10, 15, 20)
METHODS = [m for m in base.OURS if m[0] in (
    "ddim", "euler", "heun", "lms", "deis", "dpm_solver_2", "dpmpp_2s", "dpmpp_2m", "dpmpp_3m", "unipc-3 bh2",
    "expint-2", "expint-3")]
SCHEDULES = ("karras", "exponential", "uniform", "ays")
OPTIMISE = [("expint-2", "denoise"), ("expint-3", "denoise")]


class Counted:
    """A denoiser that counts its calls."""

    def __init__(self, denoiser):
        self.denoiser, self.calls = denoiser, 0

    def __call__(self, x, sigma, cond=None):
        self.calls += 1
        return self.denoiser(x, sigma, cond)


class DenoiserEpsNet(torch.nn.Module):
    """A VE denoiser as a discrete-time eps-prediction VP network (x_t, t) -> eps, counting its calls."""

    def __init__(self, denoiser, schedule):
        super().__init__()
        self.denoiser, self.schedule, self.calls, self.sigma_of = denoiser, schedule, 0, None

    def forward(self, x_t, t, cond=None):
        self.calls += 1
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        sigma = self.schedule.t_to_sigma(t) if self.sigma_of is None else torch.full_like(t, self.sigma_of())
        sigma = sigma.expand(x_t.shape[0])
        s = sigma.reshape(-1, *([1] * (x_t.ndim - 1)))
        x = x_t.to(torch.float64) * (1 + s**2).sqrt()
        return ((x - self.denoiser(x, sigma).to(torch.float64)) / s).to(x_t.dtype)


class TrainedProblem:
    """The interface of `samplers.Problem` for a trained denoiser (reference by adaptive RK45)."""

    def __init__(self, denoiser, samples: int, rtol: float, classifier):
        self.D = denoiser
        self.schedule = build_schedule("scaled_linear", beta_start=0.00085, beta_end=0.012)
        self.z = torch.randn(samples, 1, 28, 28, generator=torch.Generator().manual_seed(1234))
        self.dim = 784
        self.rtol, self.cache, self.classifier, self.ref_stats = rtol, {}, classifier, {}

    def eps_net(self):
        return DenoiserEpsNet(self.D, self.schedule)

    def denoiser(self):
        c = Counted(self.D)
        return c, c

    def fit_noise(self, batch: int) -> torch.Tensor:
        return torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(4321))

    def fit_reference(self, x_T, sigma):
        with torch.no_grad():
            return reference_solution(self.D, x_T, sigma, rtol=self.rtol, atol=self.rtol).float()

    def reference(self, x_start, sigma_start):
        key = round(sigma_start, 9)
        if key not in self.cache:
            if abs(float(x_start.flatten()[0]) - sigma_start * float(self.z.flatten()[0])) > 1e-4 * sigma_start:
                raise ValueError("reference requested for a start that is not sigma_start * z")
            stats: dict = {}
            from noisecraft.samplers import sample_ode

            with torch.no_grad():
                self.cache[key] = sample_ode(self.D, x_start.to(torch.float64),
                                             torch.tensor([sigma_start, 0.0], dtype=torch.float64), rtol=self.rtol,
                                             atol=self.rtol, stats=stats)
            self.ref_stats[key] = stats
        return self.cache[key]

    def labels(self, x):
        _, logits = self.classifier.features_and_logits(x.float().clamp(-1, 1))
        return torch.from_numpy(logits.argmax(1))

    def metrics(self, out, ref):
        out = out.to(torch.float64)
        if not torch.isfinite(out).all():
            return {"rmse": math.inf, "flips": len(out), "rmse_rest": math.inf}
        err = (out - ref).pow(2).flatten(1).mean(1)
        flip = self.labels(out) != self.labels(ref)
        rest = err[~flip]
        return {"rmse": float(err.mean().sqrt()), "flips": int(flip.sum()),
                "rmse_rest": float(rest.mean().sqrt()) if len(rest) else math.nan}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--samples", type=int, default=128)
    p.add_argument("--nfe", type=int, nargs="+", default=list(NFES))
    p.add_argument("--rtol", type=float, default=1e-6, help="reference RK45 tolerance (rtol = atol)")
    p.add_argument("--fit-batch", type=int, default=32, help="noise batch for the optimised schedules")
    p.add_argument("--fit-evaluations", type=int, default=120, help="sampler runs per optimised schedule")
    p.add_argument("--no-optimise", action="store_true")
    p.add_argument("--out", type=Path, default=HERE / "samplers_mnist.md")
    p.add_argument("--json", type=Path, default=HERE / "results" / "samplers_mnist.json")
    p.add_argument("--png", type=Path, default=HERE / "samplers_mnist.png")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--from-json", type=Path, help="only re-render the report and plot from a results JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    def log(msg):
        print(msg, flush=True)

    if args.from_json:
        data = json.loads(args.from_json.read_text())
        write(data, args)
        return 0
    from noisecraft.eval.features import get_extractor

    loaded = load(args.checkpoint)
    problem = TrainedProblem(loaded.denoiser, args.samples, args.rtol, get_extractor("mnist"))
    t0 = time.perf_counter()
    sigma_max = problem.schedule.sigma_max
    ref = problem.reference(sigma_max * problem.z, sigma_max)
    ref_stats = dict(problem.ref_stats[round(sigma_max, 9)])
    with torch.no_grad():
        from noisecraft.samplers import sample_ode

        tight = sample_ode(problem.D, (sigma_max * problem.z).to(torch.float64),
                           torch.tensor([sigma_max, 0.0], dtype=torch.float64), rtol=args.rtol / 10,
                           atol=args.rtol / 10)
    ref_err = problem.metrics(ref, tight)
    log(f"reference: {ref_stats['nfe']} NFE; RMSE vs rtol/10: {ref_err['rmse']:.2e} ({time.perf_counter() - t0:.0f} s)")
    optimised = {}
    if not args.no_optimise:
        optimised = base.optimise_schedules(problem, [n for n in args.nfe if n <= 10], args.fit_batch, log,
                                            targets=OPTIMISE, max_evaluations=args.fit_evaluations)
    rows = base.ours_table(problem, args.nfe, optimised, methods=METHODS, schedules=SCHEDULES)
    log(f"noisecraft done ({time.perf_counter() - t0:.0f} s)")
    rows += base.diffusers_table(problem, args.nfe, True, log, oracles=(True,),
                                 keep=lambda label, config: config.get("timestep_spacing") != "leading")
    log(f"diffusers done ({time.perf_counter() - t0:.0f} s)")
    for r in rows:
        r["samples"] = args.samples
    command = " ".join(["python benchmarks/samplers_mnist.py", *sys.argv[1:]])
    data = {"results": {"mnist": rows}, "command": command, "checkpoint": str(args.checkpoint),
            "checkpoint_step": loaded.step, "reference": {"nfe": ref_stats["nfe"], "rtol": args.rtol,
                                                          "rmse_vs_tighter": ref_err["rmse"],
                                                          "flips_vs_tighter": ref_err["flips"]}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(data, indent=1))
    write(data, args)
    ours, theirs = base.best_by_budget(rows, "noisecraft"), base.best_by_budget(rows, "diffusers")
    for b in sorted(set(ours) & set(theirs)):
        log(f"  NFE {b}: ours {ours[b]['rmse']:.3e} ({ours[b]['method']}, {ours[b]['schedule']})  diffusers "
            f"{theirs[b]['rmse']:.3e} ({theirs[b]['method']} {theirs[b]['schedule']})  "
            f"ratio {ours[b]['rmse'] / theirs[b]['rmse']:.3f}")
    log(f"wrote {args.out}, {args.json}, {args.png}")
    return 0


NOTES = """How to read this (2026-11-23 run: 32 samples because the 2-core machine was shared with four
training jobs, load average ~8; ~75 min in all):

- The goal of issue 3 (noisecraft's best at most half of diffusers' best RMSE at NFE 5 and 10) is not met on
  the trained model: ratios 0.95 (NFE 5), 0.63 (NFE 10), 0.89 (NFE 20). On the analytic mixtures
  (samplers.md) it is met except at d = 64, NFE 5.
- Per method the two libraries agree where they implement the same algorithm; our lead comes from the
  schedule/last-step options (AYS levels, `final="extrapolate"`) and `expint` at NFE 10. The optimised
  schedules (fitted here with only 60 sampler runs on 16 separate noise samples, against 1500 runs on 1024
  samples for the mixtures) did not beat the closed-form schedules on this model.
- 32 samples make the flip counts coarse (one flip is 3%); the RMSE ranking at NFE 10 and 20 was the same
  in an 8-sample trial run.
"""


def write(data: dict, args) -> None:
    rows = data["results"]["mnist"]
    ref = data["reference"]
    ours, theirs = base.best_by_budget(rows, "noisecraft"), base.best_by_budget(rows, "diffusers")
    lines = ["# Sampler accuracy per NFE on a trained MNIST model: noisecraft vs diffusers", "",
             f"Generated by `{data['command']}` ({platform.platform()}, torch {torch.__version__}); checkpoint at "
             f"step {data['checkpoint_step']}. Setup in the module docstring of `benchmarks/samplers_mnist.py`.", "",
             f"Reference: adaptive RK45 at rtol = atol = {ref['rtol']:g} ({ref['nfe']} NFE); its RMSE to a run at "
             f"a 10x tighter tolerance is {ref['rmse_vs_tighter']:.1e} ({ref['flips_vs_tighter']} flips), far "
             f"below the errors ranked here.", "",
             "| NFE | noisecraft best | RMSE | flips | RMSE rest | NFE | diffusers best | RMSE | flips | RMSE rest | "
             "NFE | ratio ours/diffusers |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for b in sorted(ours):
        o, t = ours[b], theirs.get(b)
        if t is None:
            continue
        lines.append(f"| {b} | {o['method']}, {o['schedule']} | {base.fmt(o)} | {t['method']} {t['schedule']} | "
                     f"{base.fmt(t)} | {o['rmse'] / t['rmse']:.3f} |")
    n = rows[0]["samples"] if rows else 0
    lines += ["", f"RMSE in pixel units of [-1, 1] over {n} samples x 784 pixels; flips = samples the MNIST "
              "classifier labels differently from the reference.", "", NOTES, "", *base.all_configurations(rows), ""]
    args.out.write_text("\n".join(lines) + "\n")
    base.plot({"MNIST (trained U-Net)": rows}, args.png)


if __name__ == "__main__":
    raise SystemExit(main())
