"""`noisecraft schedule`: show step schedules, and optimise one for a given denoiser and sampler.

    noisecraft schedule optimise --mixture bench:64:8 --sampler expint --steps 10 --out expint10.json
    noisecraft schedule optimise --checkpoint runs/quickstart --sampler "DPM++ 2M" --steps 8 --out s8.json
    noisecraft schedule show --step-schedule karras --steps 10 --noise-schedule edm
    noisecraft schedule fit-solver --checkpoint runs/quickstart --nfe 5 --out solver5.json
    noisecraft sample --checkpoint runs/quickstart --solver solver5.json ...   (sampler "fitted", 5 NFE)
    noisecraft sample --checkpoint runs/quickstart --step-schedule unipc10.json ...   (any .json is a schedule)

Two schedules meet here, each with its own flag: --step-schedule, the noise levels a sampler steps through,
and --noise-schedule, the training noise schedule whose sigma range a --mixture problem uses (--kind and
--train-schedule are their old, hidden spellings).

`fit-solver` fits a Bespoke Non-Stationary solver (`noisecraft.samplers.fitted`): its coefficients and
evaluation levels, started from an existing sampler's exact coefficients. The optimiser
(`noisecraft.schedules.optimize`) picks the inner noise levels that minimise the distance
between the sampler's output and the exact probability-flow ODE solution from the same noise. Only
argparse is imported at start-up; `run` imports what it needs.
"""

from __future__ import annotations

import argparse

from noisecraft.cli.argtypes import KeyValues, key_value, positive_int

SD = {"beta_start": 0.00085, "beta_end": 0.012}  # Stable Diffusion's scaled-linear schedule


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("schedule", help="show or optimise sampling step schedules",
                              description="Show a step schedule, or optimise one for a model and a sampler.")
    sub = p.add_subparsers(dest="schedule_command", required=True, metavar="{optimise,fit-solver,show}")

    o = sub.add_parser("optimise", aliases=["optimize"], help="optimise the noise levels for a sampler and model",
                       description="Choose the inner noise levels that minimise the RMSE between SAMPLER with "
                                   "STEPS steps and the exact probability-flow ODE solution (adaptive RK45) on a "
                                   "batch of noise; writes a JSON schedule usable wherever a step schedule name is.")
    src = o.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="run directory or checkpoint of a trained model")
    src.add_argument("--mixture", help="an exact Gaussian mixture: bench[:DIM[:COMPONENTS[:SEED]]] or a JSON file "
                                       "with means, stds, weights")
    o.add_argument("--sampler", required=True, help="sampler name or alias (e.g. unipc, 'DPM++ 2M')")
    o.add_argument("--steps", type=positive_int, required=True, help="number of sampling steps")
    o.add_argument("--out", required=True, help="output JSON file")
    o.add_argument("--option", dest="options", type=key_value, action=KeyValues, metavar="KEY=VALUE",
                   help="a sampler option (repeatable), e.g. --option order=3 --option final=extrapolate "
                        "(see `noisecraft samplers`)")
    o.add_argument("--init", default="karras,exponential,uniform",
                   help="comma-separated starting schedules; the best result wins (default: %(default)s)")
    _add_noise_schedule(o, "with --mixture: the training noise schedule whose sigma range is used: sd "
                           "(scaled-linear 0.00085..0.012, the default) or a schedule name (linear, cosine, edm, "
                           "vp, ve, flow, ...)")
    o.add_argument("--batch", type=positive_int, default=None,
                   help="noise samples to optimise on (default: 1024 for a mixture, 64 for a checkpoint)")
    o.add_argument("--seed", type=int, default=0, help="seed of the noise batch (default: 0)")
    o.add_argument("--max-evals", type=positive_int, default=600, help="sampler runs to spend (default: 600)")
    o.add_argument("--method", choices=["de", "pattern"], default="de",
                   help="de: differential evolution, then a local polish (default); pattern: local search only")
    o.add_argument("--rtol", type=float, default=1e-6, help="tolerance of the reference ODE solve (default: 1e-6)")
    o.add_argument("--device", default="cpu", help="torch device (default: cpu)")

    _add_fit_solver(sub)

    s = sub.add_parser("show", help="print the noise levels of a step schedule")
    kind = s.add_mutually_exclusive_group(required=True)
    kind.add_argument("--step-schedule", help="the step schedule: karras, exponential, logsnr, uniform, ays, "
                                              "trailing, leading, linspace, or a .json schedule")
    kind.add_argument("--kind", dest="step_schedule", help=argparse.SUPPRESS)  # deprecated spelling
    s.add_argument("--steps", type=positive_int, required=True)
    _add_noise_schedule(s, "the training noise schedule it is taken on: sd (default) or a schedule name")
    s.add_argument("--checkpoint", help="take the schedule from this run instead")
    return p


def _add_fit_solver(sub) -> None:
    f = sub.add_parser("fit-solver", help="fit a solver's coefficients and levels to a model (BNS)",
                       description="Fit a Bespoke Non-Stationary solver (Shaul et al. 2024) with NFE denoiser "
                                   "evaluations: start from SAMPLER's exact coefficients on the INIT-SCHEDULE "
                                   "levels, then fit coefficients and levels by Adam to the exact probability-flow "
                                   "ODE solution (adaptive RK45) on a batch of noise. Writes a JSON solver for "
                                   "`noisecraft sample --solver FILE`.")
    src = f.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="run directory or checkpoint of a trained model")
    src.add_argument("--mixture", help="an exact Gaussian mixture: bench[:DIM[:COMPONENTS[:SEED]]] or a JSON file")
    f.add_argument("--nfe", type=positive_int, required=True, help="denoiser evaluations of the solver")
    f.add_argument("--out", required=True, help="output JSON file")
    f.add_argument("--init", default="dpmpp_2m", help="the sampler it starts from (default: %(default)s)")
    f.add_argument("--option", dest="options", type=key_value, action=KeyValues, metavar="KEY=VALUE",
                   help="an option of the --init sampler (repeatable), e.g. --option final=extrapolate")
    f.add_argument("--init-schedule", default="karras", help="step schedule of the --init sampler (default: karras)")
    _add_noise_schedule(f, "with --mixture: the training noise schedule whose sigma range is used (default: sd)")
    f.add_argument("--batch", type=positive_int, default=None,
                   help="noise samples to fit on (default: 4096 for a mixture, 64 for a checkpoint)")
    f.add_argument("--validation", type=positive_int, default=None,
                   help="further noise samples that choose the returned iterate (default: batch / 4)")
    f.add_argument("--minibatch", type=positive_int, default=None, help="samples per Adam step (default: all)")
    f.add_argument("--iterations", type=positive_int, default=300, help="Adam steps (default: 300)")
    f.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate, cosine-decayed (default: 0.01)")
    f.add_argument("--loss", choices=["mse", "norm"], default="mse",
                   help="mse: mean squared error (default); norm: mean per-sample RMSE")
    f.add_argument("--seed", type=int, default=0, help="seed of the noise batch (default: 0)")
    f.add_argument("--rtol", type=float, default=1e-6, help="tolerance of the reference ODE solve (default: 1e-6)")
    f.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def _fit_solver(args) -> int:
    import time

    import torch

    from noisecraft import samplers
    from noisecraft.errors import NoisecraftError
    from noisecraft.samplers.fitted import extract, fit
    from noisecraft.schedules import get_sigmas
    from noisecraft.schedules.optimize import reference_solution

    if not args.lr > 0:
        raise NoisecraftError(f"--lr must be > 0; got {args.lr:g}")
    name, _ = samplers.resolve_alias(args.init)
    options = samplers.check_options(name, args.options)
    args.batch = args.batch or (4096 if args.mixture else 64)
    denoiser, schedule, shape, batch, source = _problem(args)
    per_step = {"heun": 2, "dpm_solver_2": 2, "dpmpp_2s": 2, "dpm_solver_3": 3}.get(name, 1)
    steps = (args.nfe - 1) // per_step + 1
    start = extract(name, get_sigmas(schedule, steps, args.init_schedule), options=options,
                    meta={"base_schedule": args.init_schedule, **source})
    if start.nfe != args.nfe:
        raise NoisecraftError(f"--init {name} takes {start.nfe} evaluations with {steps} steps, not --nfe {args.nfe}; "
                              f"pick an NFE it can reach (one per step, or {per_step} per step but the last)")
    val = args.validation or max(1, batch // 4)
    g = torch.Generator().manual_seed(args.seed)
    x_all = start.sigma_max * torch.randn(batch + val, *shape, generator=g).to(args.device)
    print(f"reference: adaptive RK45 on {batch + val} samples (rtol {args.rtol:g}) ...", flush=True)
    t0 = time.perf_counter()
    with torch.no_grad():
        ref = reference_solution(denoiser, x_all, start.sigma_max, rtol=args.rtol, atol=args.rtol).to(x_all.dtype)
    ref_seconds = time.perf_counter() - t0
    result = fit(denoiser, start, x_all[:batch], ref[:batch], sigma_min=schedule.sigma_min,
                 iterations=args.iterations, lr=args.lr, batch=args.minibatch, seed=args.seed, loss=args.loss,
                 validation=(x_all[batch:], ref[batch:]), log=print,
                 meta={"nfe": args.nfe, "noise_seed": args.seed, "reference_rtol": args.rtol,
                       "reference_seconds": round(ref_seconds, 1), "created": time.strftime("%Y-%m-%d %H:%M:%S")})
    result.solver.save(args.out)
    print(f"{name} on {args.init_schedule}, NFE {args.nfe}: RMSE to the exact ODE solution on the fitting batch "
          f"{result.initial_rmse:.4g} -> {result.rmse:.4g}; fitting cost {result.model_calls} denoiser calls on "
          f"batches of up to {args.minibatch or batch} (with backward passes), {result.seconds:.0f} s (+ reference "
          f"{ref_seconds:.0f} s); wrote {args.out}")
    print("sigmas: " + ", ".join(f"{s:.4g}" for s in result.solver.sigmas))
    return 0


def _add_noise_schedule(p, help: str) -> None:
    p.add_argument("--noise-schedule", default="sd", help=help)
    p.add_argument("--train-schedule", dest="noise_schedule", help=argparse.SUPPRESS)  # deprecated spelling


def _train_schedule(name: str):
    from noisecraft.schedules import build_schedule

    return build_schedule("scaled_linear", **SD) if name == "sd" else build_schedule(name)


def _problem(args):
    """(denoiser, schedule, data shape, batch, description) for --mixture or --checkpoint."""
    if args.mixture:
        from noisecraft.samplers.mixture import load_mixture

        mixture = load_mixture(args.mixture)
        return mixture.denoise, _train_schedule(args.noise_schedule), (mixture.dim,), args.batch or 1024, {
            "mixture": args.mixture, "train_schedule": args.noise_schedule}
    from noisecraft.pipelines import load

    loaded = load(args.checkpoint, device=args.device)
    return loaded.denoiser, loaded.denoiser.schedule, tuple(loaded.data_shape), args.batch or 64, {
        "checkpoint": str(args.checkpoint)}


def _optimise(args) -> int:
    import math

    import torch

    from noisecraft import samplers
    from noisecraft.errors import NoisecraftError
    from noisecraft.schedules import get_sigmas
    from noisecraft.schedules.optimize import optimize_sigmas, reference_solution

    name, _ = samplers.resolve_alias(args.sampler)
    options = samplers.check_options(name, args.options)
    if args.steps < 2:
        raise NoisecraftError("optimising needs --steps >= 2 (one step has no inner noise level)")
    denoiser, schedule, shape, batch, source = _problem(args)
    inits = [get_sigmas(schedule, args.steps, k.strip()) for k in args.init.split(",") if k.strip()]
    g = torch.Generator().manual_seed(args.seed)
    x_T = float(inits[0][0]) * torch.randn(batch, *shape, generator=g).to(args.device)
    print(f"reference: adaptive RK45 on {batch} samples (rtol {args.rtol:g}) ...", flush=True)
    ref = reference_solution(denoiser, x_T, float(inits[0][0]), rtol=args.rtol, atol=args.rtol)
    result = optimize_sigmas(denoiser, samplers.get(name), inits, x_T, ref, sigma_min=schedule.sigma_min,
                             options=options, method=args.method, max_evaluations=args.max_evals, name=name,
                             seed=args.seed,
                             meta={**source, "steps": args.steps, "batch": batch, "seed": args.seed, "init": args.init})
    result.save(args.out)
    print(f"{name}, {args.steps} steps: RMSE to the exact ODE solution {math.sqrt(result.initial_loss):.4g} (best "
          f"start) -> {math.sqrt(result.loss):.4g} in {result.evaluations} runs; wrote {args.out}")
    print("sigmas: " + ", ".join(f"{s:.4g}" for s in result.sigmas))
    return 0


def _show(args) -> int:
    from noisecraft.schedules import get_sigmas

    if args.checkpoint:
        from noisecraft.pipelines import load

        schedule = load(args.checkpoint).denoiser.schedule
    else:
        schedule = _train_schedule(args.noise_schedule)
    print(", ".join(f"{s:.6g}" for s in get_sigmas(schedule, args.steps, args.step_schedule).tolist()))
    return 0


def run(args) -> int:
    if args.schedule_command in ("optimise", "optimize"):
        return _optimise(args)
    if args.schedule_command == "fit-solver":
        return _fit_solver(args)
    return _show(args)
