"""Fitted BNS solvers (`noisecraft.samplers.fitted`) against the best noisecraft sampler, on noise and problems
not used for fitting.

Each fitted solver starts from the sampler (with Karras sigmas) that is best on the FITTING noise, extracted
exactly, and is fitted by Adam to the exact probability-flow ODE solution from that fitting noise (seed 4321,
split into a fitting and a validation part; the validation part picks the returned iterate). Scores are on
other noise (seed 1234, the noise samplers.md and samplers_mnist.md score on) and, for the mixtures, on
mixtures the fitting never saw. The comparison rows are every noisecraft sampler of samplers.py /
samplers_mnist.py on the same evaluation noise: "best Karras" (the aim's baseline) and the best over the
closed-form schedules.

    python benchmarks/fitted_solvers.py mixtures       # SD schedule, exact mixture denoiser (samplers.py setup)
    python benchmarks/fitted_solvers.py mnist --checkpoint runs/solver-mnist
    python benchmarks/fitted_solvers.py report benchmarks/results/fitted_solvers_mnist.json   (markdown tables)

mixtures: fitted on bench:32:6:0 (32 dimensions, 6 components, seed 0); scored on its held-out noise, and,
transferred unchanged, on other mixtures (other seeds, dimensions, component counts, incl. seed 90001 that
no development run used); on some of those a solver is also fitted afresh (on that mixture's fitting noise).
Truth: DOP853 at rtol 1e-10 (samplers.exact_solution). mnist: the trained model's ODE from sigma_max = 14.61
(SD's table, as samplers_mnist.py), reference adaptive RK45 at --rtol; metrics as samplers_mnist.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import samplers as base  # noqa: E402
from noisecraft.samplers import options  # noqa: E402
from noisecraft.samplers.fitted import extract, fit  # noqa: E402
from noisecraft.samplers.mixture import benchmark_mixture  # noqa: E402
from noisecraft.schedules import build_schedule, get_sigmas  # noqa: E402

SD = build_schedule("scaled_linear", beta_start=0.00085, beta_end=0.012)
NFES = (5, 10)


def log(msg: str) -> None:
    print(msg, flush=True)


def candidates(methods):
    """(label, sampler, options) of every method x last step, all extractable (deterministic, fixed-step)."""
    for label, sampler, opts, per_step in methods:
        default = options(sampler).get("final", "denoise")
        finals = [default] + (["extrapolate"] if sampler in base.EXTRAPOLATE and "final" in options(sampler) else [])
        for final in finals:
            o = dict(opts, **({"final": final} if final != default else {}))
            yield label + (" +extrap" if final == "extrapolate" else ""), sampler, o, per_step


def pick_start(D, x, ref, nfe, methods):
    """The Karras-sigma sampler with the lowest RMSE on the fitting noise, as an extracted solver."""
    best = None
    for label, sampler, o, per_step in candidates(methods):
        sigmas = get_sigmas(SD, base.steps_for(nfe, per_step), "karras")
        solver = extract(sampler, sigmas, options=o, meta={"base_label": label, "base_schedule": "karras"})
        err = float((solver.run(D, x) - ref).pow(2).mean().sqrt())
        if best is None or err < best[0]:
            best = (err, solver)
    return best[1]


def baselines(problem, nfes, methods, schedules) -> dict:
    rows = base.ours_table(problem, nfes, {}, methods=methods, schedules=schedules)
    karras = base.best_by_budget([r for r in rows if r["schedule"] == "karras"], "noisecraft")
    return {b: {"karras": karras[b], "any": r} for b, r in base.best_by_budget(rows, "noisecraft").items()}


def score(problem, solver):
    D, counter = problem.denoiser()
    x_T = solver.sigma_max * problem.z
    out = solver.run(D, x_T)  # float32 like the sampler rows (samplers.run_ours)
    return {**problem.metrics(out, problem.reference(x_T, solver.sigma_max)), "nfe": counter.calls}


# ---------------------------------------------------------------------------------------------- mixtures


def mixture_problem(dim, k, seed, samples):
    z = torch.randn(samples, dim, generator=torch.Generator().manual_seed(1234))
    return base.Problem(dim, benchmark_mixture(dim, k, seed), SD, z, {})


def fit_mixture(problem, nfe, args):
    x = SD.sigma_max * problem.fit_noise(args.fit + args.val).to(torch.float64)
    t0 = time.perf_counter()
    ref = problem.fit_reference(x, SD.sigma_max)
    ref_s = time.perf_counter() - t0
    D, _ = problem.denoiser()
    start = pick_start(D, x[: args.val], ref[: args.val], nfe, base.OURS)
    res = fit(D, start, x[args.val:], ref[args.val:], sigma_min=SD.sigma_min, iterations=args.iterations, lr=args.lr,
              batch=args.minibatch, loss="mse", validation=(x[: args.val], ref[: args.val]))
    log(f"    fitted NFE {nfe} from {start.meta['base_label']}: fit-batch rmse {res.initial_rmse:.3e} -> "
        f"{res.rmse:.3e} ({res.model_calls} calls, {res.seconds:.0f} s; reference {ref_s:.0f} s)")
    return res, ref_s


def run_mixtures(args) -> dict:
    train = (32, 6, 0)
    others = [(32, 6, 1), (32, 6, 2), (32, 6, 3), (32, 6, 90001), (16, 4, 5), (64, 8, 0), (32, 10, 6)]
    refit = {(32, 6, 90001), (16, 4, 5), (64, 8, 0)}
    out = {"train": list(train), "rows": []}
    solvers = {}
    for spec in [train] + others:
        log(f"mixture bench:{spec[0]}:{spec[1]}:{spec[2]}")
        problem = mixture_problem(*spec, args.samples)
        best = baselines(problem, NFES, base.OURS, base.SCHEDULES)
        for nfe in NFES:
            row = {"mixture": "bench:{}:{}:{}".format(*spec), "budget": nfe, "best_karras": best[nfe]["karras"],
                   "best_any": best[nfe]["any"]}
            if spec == train or spec in refit:
                res, ref_s = fit_mixture(problem, nfe, args)
                row["fitted_here"] = {**score(problem, res.solver), "base": res.solver.meta["base_label"],
                                      "calls": res.model_calls, "seconds": res.seconds, "reference_s": ref_s,
                                      "fit_samples": args.fit, "val_samples": args.val}
                if spec == train:
                    solvers[nfe] = res.solver
                    res.solver.save(args.solver_dir / f"mixture_32_6_0_nfe{nfe}.json")
            if spec != train:
                row["transferred"] = score(problem, solvers[nfe])
            out["rows"].append(row)
            log("   " + json.dumps({k: (v["rmse"] if isinstance(v, dict) else v) for k, v in row.items()}))
    return out


# ------------------------------------------------------------------------------------------------- mnist


def run_mnist(args) -> dict:
    import samplers_mnist as sm
    from noisecraft.eval.features import get_extractor
    from noisecraft.pipelines import load

    loaded = load(args.checkpoint)
    D = loaded.denoiser
    problem = sm.TrainedProblem(D, args.samples, args.rtol, get_extractor("mnist"))
    t0 = time.perf_counter()
    ref = problem.reference(SD.sigma_max * problem.z, SD.sigma_max)
    nfe_ref = problem.ref_stats[round(SD.sigma_max, 9)]["nfe"]
    from noisecraft.samplers import sample_ode

    with torch.no_grad():
        tight = sample_ode(D, (SD.sigma_max * problem.z).to(torch.float64),
                           torch.tensor([SD.sigma_max, 0.0], dtype=torch.float64), rtol=args.rtol / 10,
                           atol=args.rtol / 10)
    ref_err = problem.metrics(ref, tight)
    log(f"reference {nfe_ref} NFE, rmse vs rtol/10 {ref_err['rmse']:.2e} ({time.perf_counter() - t0:.0f} s)")
    best = baselines(problem, NFES, sm.METHODS, ("karras", "ays"))
    log(f"baselines done ({time.perf_counter() - t0:.0f} s)")
    x = SD.sigma_max * problem.fit_noise(args.fit + args.val)
    t1 = time.perf_counter()
    fit_ref = problem.fit_reference(x, SD.sigma_max)
    ref_s = time.perf_counter() - t1
    out = {"checkpoint": str(args.checkpoint), "step": loaded.step, "reference": {"nfe": nfe_ref, "rtol": args.rtol,
           "rmse_vs_tighter": ref_err["rmse"]}, "rows": []}
    for nfe in NFES:
        t2 = time.perf_counter()
        with torch.no_grad():
            start = pick_start(D, x[: args.val], fit_ref[: args.val], nfe, sm.METHODS)
        pick_s = time.perf_counter() - t2
        res = fit(D, start, x[args.val:], fit_ref[args.val:], sigma_min=SD.sigma_min, iterations=args.iterations,
                  lr=args.lr, batch=args.minibatch, loss="norm", validation=(x[: args.val], fit_ref[: args.val]),
                  validate_every=5)
        res.solver.save(args.solver_dir / f"mnist_nfe{nfe}.json")
        row = {"budget": nfe, "best_karras": best[nfe]["karras"], "best_any": best[nfe]["any"],
               "fitted": {**score(problem, res.solver), "base": start.meta["base_label"], "calls": res.model_calls,
                          "seconds": res.seconds, "pick_seconds": pick_s, "reference_s": ref_s,
                          "fit_samples": args.fit, "val_samples": args.val,
                          "chosen_iteration": res.solver.meta["fit"]["chosen_iteration"]}}
        out["rows"].append(row)
        log(f"NFE {nfe}: karras {row['best_karras']['rmse']:.3e} ({row['best_karras']['method']}), any "
            f"{row['best_any']['rmse']:.3e} ({row['best_any']['method']} {row['best_any']['schedule']}), fitted "
            f"{row['fitted']['rmse']:.3e} from {start.meta['base_label']} ({res.seconds:.0f} s, {res.model_calls} "
            f"calls)")
    return out


def _cell(r) -> str:
    return f"{r['rmse']:.3e} ({r['flips']} flips, rest {r['rmse_rest']:.2e}, NFE {r['nfe']})"


def _ratio(r, b) -> str:
    return f"{r['rmse'] / b['rmse']:.2f}"


def report(data: dict) -> str:
    """The markdown tables of a results JSON (mixtures or mnist)."""
    lines = [f"Generated by `{data['command']}` on {data['date']} ({data['seconds']} s in all; 2-core CPU shared with "
             f"other jobs, 1 thread); settings {json.dumps(data['settings'])}.", ""]
    if "train" in data:
        lines += ["| mixture | NFE | best Karras (method) | best closed-form schedule | fitted on bench:32:6:0, "
                  "transferred | ratio to best Karras | fitted on this mixture | ratio | fitting cost |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in data["rows"]:
            k, a = r["best_karras"], r["best_any"]
            tr, here = r.get("transferred"), r.get("fitted_here")
            cost = (f"{here['calls']} calls, {here['seconds']:.0f} s (+ ref {here['reference_s']:.0f} s)"
                    if here else "")
            lines.append(f"| {r['mixture']} | {r['budget']} | {_cell(k)} ({k['method']}) | {_cell(a)} ({a['method']}, "
                         f"{a['schedule']}) | {_cell(tr) if tr else '(fitted here)'} | {_ratio(tr, k) if tr else ''} | "
                         f"{_cell(here) + ' from ' + here['base'] if here else ''} | {_ratio(here, k) if here else ''} "
                         f"| {cost} |")
        return "\n".join(lines)
    ref = data["reference"]
    lines += [f"Checkpoint {data['checkpoint']} (step {data['step']}); reference RK45 at rtol {ref['rtol']:g} "
              f"({ref['nfe']} NFE), its RMSE to rtol/10: {ref['rmse_vs_tighter']:.1e}.", "",
              "| NFE | best Karras (method) | best of Karras/AYS | fitted (start) | ratio to best Karras | ratio to "
              "best of Karras/AYS | fitting cost |", "|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        k, a, f = r["best_karras"], r["best_any"], r["fitted"]
        lines.append(f"| {r['budget']} | {_cell(k)} ({k['method']}) | {_cell(a)} ({a['method']}, {a['schedule']}) | "
                     f"{_cell(f)} (from {f['base']}) | {_ratio(f, k)} | {_ratio(f, a)} | {f['calls']} calls on "
                     f"batches of {data['settings']['minibatch']} with backward, {f['seconds']:.0f} s (+ start pick "
                     f"{f['pick_seconds']:.0f} s, reference {f['reference_s']:.0f} s) |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("part", choices=["mixtures", "mnist", "report"])
    p.add_argument("results", nargs="?", type=Path, help="report: the results JSON to render")
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--samples", type=int, default=None, help="evaluation samples (2048 mixtures, 32 mnist)")
    p.add_argument("--fit", type=int, default=None, help="fitting samples (8192 mixtures, 32 mnist)")
    p.add_argument("--val", type=int, default=None, help="validation samples (2048 mixtures, 16 mnist)")
    p.add_argument("--minibatch", type=int, default=None, help="samples per Adam step (2048 mixtures, 16 mnist)")
    p.add_argument("--iterations", type=int, default=None, help="Adam steps (300 mixtures, 60 mnist)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (0.01 mixtures, 0.02 mnist)")
    p.add_argument("--rtol", type=float, default=1e-5, help="mnist reference RK45 tolerance")
    p.add_argument("--solver-dir", type=Path, default=Path("runs/fitted-solvers"))
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.part == "report":
        print(report(json.loads(args.results.read_text())))
        return 0
    torch.set_num_threads(1)
    mix = args.part == "mixtures"
    for key, m, n in (("samples", 2048, 32), ("fit", 8192, 32), ("val", 2048, 16), ("minibatch", 2048, 16),
                      ("iterations", 300, 60), ("lr", 1e-2, 2e-2)):
        if getattr(args, key) is None:
            setattr(args, key, m if mix else n)
    args.solver_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = run_mixtures(args) if mix else run_mnist(args)
    data.update(command=" ".join(["python benchmarks/fitted_solvers.py", *sys.argv[1:]]),
                seconds=round(time.perf_counter() - t0), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                settings={k: getattr(args, k) for k in ("samples", "fit", "val", "minibatch", "iterations", "lr")})
    path = args.json or HERE / "results" / f"fitted_solvers_{args.part}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str))
    log(f"wrote {path} ({data['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
