"""Fitted non-stationary linear solvers: Bespoke Non-Stationary (BNS) solvers (Shaul et al. 2024, "Bespoke
Non-Stationary Solvers for Fast Sampling of Diffusion and Flow Models", ICML 2024).

A solver with n denoiser evaluations (NFE = n) is, in the VE view x = x0 + sigma noise,

    D_j     = D(x_j, s_j)                                       j = 0 .. n - 1
    x_{k+1} = a_k x_0 + sum_{j <= k} b_kj D_j                   k = 0 .. n - 1

with x_0 = sigma_max z the initial sample and x_n the output. The evaluation levels s_j (s_0 = sigma_max is
kept) and the coefficients a_k, b_kj are free parameters. Shaul et al. write the update on the velocity u_j
and t in [0, 1]; in the VE view with x0-prediction the same class is spanned by (x_0, D_0 .. D_k), because
every earlier x_j is itself a combination of those. Every deterministic fixed-step solver with one input per
evaluation is in the class (Euler, Heun, DPM-Solver(++), UniPC, DEIS, LMS, expint on a fixed schedule): given
the levels, its output and every denoiser input are linear in x_0 and the denoiser outputs. `extract` reads
those exact coefficients off any such sampler by probing it with a fake denoiser in float64 (each output a
unit vector), so a fitted solver can start from a known sampler and, unfitted, reproduces it exactly.

`fit` then minimises the distance (mean squared error, or the mean per-sample RMSE) between the solver's
output and a reference (the exact or adaptive-RK45 probability-flow ODE solution from the same noise; BNS
fits the same final-sample error) by Adam (Kingma & Ba 2015), back-propagating through the denoiser in x and
sigma. Parameters are offsets from the starting solver: a_k moves in units of s_{k+1} / sigma_max (noise
units at the level the step reaches), b_kj in data units, log s_j directly (clamped to [sigma_min,
sigma_max]); the learning rate follows a cosine decay to 1% so the last iterations settle.

A solver is a JSON file (`FittedSolver.save` / `load_solver`): format, version, nfe, sigmas, a, b (row k holds
k + 1 numbers), and provenance in meta. The sampler `fitted` (`sample_fitted`) runs one.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from noisecraft.errors import NoisecraftError
from noisecraft.samplers._common import check_sigmas, notify, working

FORMAT = "noisecraft-fitted-solver"
VERSION = 1

__all__ = ["FORMAT", "FitResult", "FittedSolver", "extract", "fit", "load_solver", "sample_fitted",
           "solver_request"]


@dataclass(frozen=True)
class FittedSolver:
    """x_(k+1) = a_k x_0 + sum over j <= k of b_kj D(x_j, sigmas_j); x_nfe is the output (module docstring)."""

    sigmas: tuple[float, ...]             # the n evaluation levels; sigmas[0] = sigma_max, the start level
    a: tuple[float, ...]                  # n coefficients of x_0
    b: tuple[tuple[float, ...], ...]      # n rows; row k holds the k + 1 coefficients of D_0 .. D_k
    meta: dict = field(default_factory=dict, compare=False)  # provenance (base sampler, problem, fit, cost)

    def __post_init__(self) -> None:
        _validate(self.sigmas, self.a, self.b, "fitted solver")

    @property
    def nfe(self) -> int:
        return len(self.sigmas)

    @property
    def sigma_max(self) -> float:
        return self.sigmas[0]

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "nfe": self.nfe, "sigmas": list(self.sigmas),
                "a": list(self.a), "b": [list(row) for row in self.b], "meta": self.meta}

    def save(self, path) -> Path:
        """Write the solver as JSON (atomically); returns the path."""
        from noisecraft.files import atomic_write_bytes

        path = Path(path)
        atomic_write_bytes(path, (json.dumps(self.to_json(), indent=1) + "\n").encode())
        return path

    def run(self, denoiser, x: torch.Tensor, *, cond=None, callback=None) -> torch.Tensor:
        """The solver's output from x = x_0 at sigma_max (no gradient)."""
        with torch.no_grad():
            return _solve(denoiser, working(x), [torch.tensor(s, dtype=torch.float64) for s in self.sigmas],
                          self.a, self.b, cond, callback)


def _solve(denoiser, x0: torch.Tensor, sigmas, a, b, cond=None, callback=None) -> torch.Tensor:
    """The linear recursion of the module docstring; a, b, sigmas may be tensors (with gradients) or floats."""
    outputs, x = [], x0
    n = len(sigmas)
    for k in range(n):
        D = denoiser(x, sigmas[k], cond).to(x0.dtype)
        notify(callback, k, x, sigmas[k], sigmas[k + 1] if k + 1 < n else 0.0, D)
        outputs.append(D)
        x = a[k] * x0
        for j in range(k + 1):
            x = x + b[k][j] * outputs[j]
    return x


def _validate(sigmas, a, b, where: str) -> None:
    n = len(sigmas)
    if n < 1:
        raise NoisecraftError(f"{where}: needs at least one evaluation level (nfe >= 1)")
    if len(a) != n or len(b) != n:
        raise NoisecraftError(f"{where}: nfe {n} needs {n} coefficients a and {n} rows b; got {len(a)} and {len(b)}")
    for k, row in enumerate(b):
        if len(row) != k + 1:
            raise NoisecraftError(f"{where}: row b[{k}] must hold {k + 1} coefficients (D_0 .. D_{k}); got {len(row)}")
    values = [*sigmas, *a, *(v for row in b for v in row)]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise NoisecraftError(f"{where}: sigmas, a and b must be finite numbers")
    if any(s <= 0 for s in sigmas):
        raise NoisecraftError(f"{where}: evaluation levels (sigmas) must be > 0; got {list(sigmas)}")


def load_solver(path) -> FittedSolver:
    """A solver from a JSON file written by `FittedSolver.save` (e.g. `noisecraft schedule fit-solver`),
    checked: NoisecraftError names the file and what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise NoisecraftError(f"cannot read fitted solver {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise NoisecraftError(f"fitted solver {path} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise NoisecraftError(f"{path} is not a fitted solver (expected a JSON object with \"format\": \"{FORMAT}\"; "
                              f"write one with `noisecraft schedule fit-solver`)")
    if data.get("version") != VERSION:
        raise NoisecraftError(f"fitted solver {path}: version {data.get('version')!r} is not supported "
                              f"(only {VERSION})")
    missing = [k for k in ("nfe", "sigmas", "a", "b") if k not in data]
    if missing:
        raise NoisecraftError(f"fitted solver {path}: missing key(s) {', '.join(missing)}")
    sigmas, a, b, meta = data["sigmas"], data["a"], data["b"], data.get("meta", {})
    if not (isinstance(sigmas, list) and isinstance(a, list) and isinstance(b, list)
            and all(isinstance(row, list) for row in b) and isinstance(meta, dict)):
        raise NoisecraftError(f"fitted solver {path}: sigmas, a must be lists, b a list of lists, meta an object")
    if data["nfe"] != len(sigmas):
        raise NoisecraftError(f"fitted solver {path}: nfe is {data['nfe']!r} but it lists {len(sigmas)} sigmas")
    _validate(sigmas, a, b, f"fitted solver {path}")
    return FittedSolver(tuple(float(s) for s in sigmas), tuple(float(v) for v in a),
                        tuple(tuple(float(v) for v in row) for row in b), meta)


_CACHE: dict = {}


def _cached(path: str) -> FittedSolver:
    p = Path(path)
    key = (str(p.resolve()), p.stat().st_mtime_ns) if p.is_file() else None
    if key is None or key not in _CACHE:
        solver = load_solver(p)
        if key is None:
            return solver
        _CACHE.clear()
        _CACHE[key] = solver
    return _CACHE[key]


@torch.no_grad()
def sample_fitted(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, solver: str = ""):
    """Run the fitted solver in the JSON file `solver` (BNS, Shaul et al. 2024; the recursion of the module docstring).

    The solver brings its own evaluation levels: of `sigmas` only the length (steps = the solver's NFE) and
    sigmas[0] (the level of x, = the solver's sigma_max) are used, and both must match the file.
    """
    if not solver:
        raise NoisecraftError("sampler 'fitted' needs option solver=FILE.json (a solver from `noisecraft schedule "
                              "fit-solver`; on the command line: --solver FILE.json)")
    fitted = _cached(solver)
    sigmas = check_sigmas(sigmas, x)
    if len(sigmas) - 1 != fitted.nfe:
        raise NoisecraftError(f"fitted solver {solver} takes {fitted.nfe} denoiser evaluations (NFE); asked for "
                              f"{len(sigmas) - 1} steps; use --steps {fitted.nfe} (or fit a solver for this NFE)")
    if not math.isclose(float(sigmas[0]), fitted.sigma_max, rel_tol=1e-6):
        raise NoisecraftError(f"fitted solver {solver} starts at sigma_max = {fitted.sigma_max:.6g}, but sampling "
                              f"starts at {float(sigmas[0]):.6g}; fit the solver on this model's noise schedule")
    return fitted.run(denoiser, x, cond=cond, callback=callback).to(x.dtype)


def solver_request(path, sampler: str | None, steps: int | None) -> tuple[str, int]:
    """(sampler, steps) for `noisecraft sample --solver FILE`: the sampler "fitted" (any other --sampler is an
    error) and the solver's NFE as the step count (another --steps is an error naming the NFE)."""
    from noisecraft import samplers

    solver = load_solver(path)
    if sampler is not None and samplers.resolve(sampler) != "fitted":
        raise NoisecraftError(f"--solver runs the sampler 'fitted'; drop --sampler {sampler} or give --sampler fitted")
    if steps is not None and steps != solver.nfe:
        raise NoisecraftError(f"fitted solver {path} takes {solver.nfe} denoiser evaluations (NFE); got --steps "
                              f"{steps}; use --steps {solver.nfe} or leave --steps out")
    return "fitted", solver.nfe


# -------------------------------------------------------------------------------------------- extraction


class _Probe:
    """A fake denoiser: call j records its input and noise level and returns outputs[j]."""

    def __init__(self, outputs):
        self.outputs, self.inputs, self.sigmas = outputs, [], []

    def __call__(self, x, sigma, cond=None):
        j = len(self.inputs)
        if j >= len(self.outputs):
            raise NoisecraftError("the sampler called the denoiser more often on a second probe than on the first "
                                  "(its evaluation count depends on the data; adaptive samplers cannot be extracted)")
        self.inputs.append(x.detach().clone())
        self.sigmas.append(float(torch.as_tensor(sigma).reshape(-1)[0]))
        return self.outputs[j].to(x.dtype)


def extract(sampler: str, sigmas, *, options: dict | None = None, meta: dict | None = None) -> FittedSolver:
    """The exact FittedSolver of a deterministic fixed-step sampler on the levels `sigmas`.

    Probe (float64): x_0 = e_0 and D_j = e_{j+1} in dimension 1 + NFE; then each denoiser input and the output
    hold their coefficients on (x_0, D_0, D_1, ...) as coordinates. A second probe with random x_0 and D_j
    (several samples) must agree with the coefficients to 1e-9, else the sampler is not linear in the denoiser
    outputs (stochastic, adaptive or data-dependent) and NoisecraftError says so.
    """
    from noisecraft import samplers

    name = samplers.resolve(sampler)
    options = samplers.check_options(name, options)
    fn = samplers.get(name)
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    counter = _Probe([torch.zeros(1, 1, dtype=torch.float64)] * 10_000)
    fn(counter, torch.ones(1, 1, dtype=torch.float64), sigmas, generator=torch.Generator().manual_seed(0), **options)
    n = len(counter.inputs)
    if n == 0:
        raise NoisecraftError(f"sampler {name!r} made no denoiser evaluation on these sigmas")
    eye = torch.eye(n + 1, dtype=torch.float64)
    probe = _Probe([eye[j + 1][None] for j in range(n)])
    out = fn(probe, eye[0][None].clone(), sigmas, generator=torch.Generator().manual_seed(0), **options)
    if len(probe.inputs) != n:
        raise NoisecraftError(f"sampler {name!r} is not a fixed-step sampler (its evaluation count changed)")
    rows = [x[0].tolist() for x in probe.inputs[1:]] + [out[0].tolist()]
    if probe.inputs[0][0].tolist() != eye[0].tolist():
        raise NoisecraftError(f"sampler {name!r} does not evaluate the denoiser at its initial sample first")
    a = tuple(r[0] for r in rows)
    b = tuple(tuple(r[1:k + 2]) for k, r in enumerate(rows))
    if any(abs(v) > 0 for k, r in enumerate(rows) for v in r[k + 2:]):
        raise NoisecraftError(f"sampler {name!r} is not linear in the denoiser outputs (a denoiser input depends on "
                              f"an output not yet evaluated: it is stochastic); extract from a deterministic sampler")
    solver = FittedSolver(tuple(probe.sigmas), a, b, {"base_sampler": name, "base_options": options,
                                                      "base_sigmas": sigmas.tolist(), **(meta or {})})
    _check_linear(fn, name, solver, sigmas, options)
    return solver


def _check_linear(fn, name: str, solver: FittedSolver, sigmas, options) -> None:
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 4, generator=g, dtype=torch.float64) * solver.sigma_max
    outputs = [torch.randn(3, 4, generator=g, dtype=torch.float64) for _ in range(solver.nfe)]
    probe = _Probe(outputs)
    out = fn(probe, x0.clone(), sigmas, generator=torch.Generator().manual_seed(2), **options)
    mine = _Probe(outputs)
    expected = _solve(mine, x0, solver.sigmas, solver.a, solver.b)
    scale = 1.0 + float(x0.abs().max())
    if len(probe.inputs) != solver.nfe or any(
            float((p - q).abs().max()) > 1e-9 * scale for p, q in zip([*probe.inputs, out], [*mine.inputs, expected])):
        raise NoisecraftError(f"sampler {name!r} is not linear in the denoiser outputs with these options (it is "
                              f"stochastic or data-dependent); extract from a deterministic fixed-step sampler "
                              f"(e.g. euler, heun, dpmpp_2m, unipc, expint)")


# ----------------------------------------------------------------------------------------------- fitting


@dataclass(frozen=True)
class FitResult:
    solver: FittedSolver
    initial_rmse: float     # RMSE to the reference on the fitting batch, before
    rmse: float             # and after (the returned iterate)
    iterations: int
    model_calls: int        # denoiser evaluations (forward; each on a batch, with a backward pass while fitting)
    seconds: float          # wall time of the fit (the reference not included)
    history: list = field(default_factory=list)  # loss per iteration


def fit(denoiser, start: FittedSolver, x_T: torch.Tensor, reference: torch.Tensor, *, sigma_min: float,
        iterations: int = 300, lr: float = 1e-2, batch: int | None = None, fit_sigmas: bool = True, seed: int = 0,
        loss: str = "norm", validation: tuple | None = None, validate_every: int = 10, cond=None, log=None,
        meta: dict | None = None) -> FitResult:
    """Fit the solver's coefficients (and levels, unless fit_sigmas=False) to minimise the
    distance between solver(x_T) and reference by Adam with a cosine-decayed learning rate (module docstring).

    x_T: the start, sigma_max times unit noise (B, ...); reference: the ODE solution from x_T; batch: samples
    per iteration (None = all); loss: "norm" = mean over samples of ||out - ref|| / sqrt(dim) (the RMSE loss of BNS,
    Shaul et al. 2024; robust to the few samples that end in another mode) or "mse" = mean squared
    error; validation: (x_val, ref_val), other fitting noise: the iterate with the lowest validation RMSE
    (checked every `validate_every` iterations) is returned, else the last."""
    if x_T.shape != reference.shape:
        raise NoisecraftError(f"x_T {tuple(x_T.shape)} and reference {tuple(reference.shape)} differ in shape")
    if iterations < 0 or lr <= 0 or not 0 < sigma_min <= start.sigma_max:
        raise NoisecraftError("need iterations >= 0, lr > 0 and 0 < sigma_min <= sigma_max")
    if loss not in LOSSES:
        raise NoisecraftError(f"loss must be one of {', '.join(LOSSES)}; got {loss!r}")
    n, dtype = start.nfe, working(x_T).dtype
    s0 = torch.tensor(start.sigmas, dtype=torch.float64)
    a0, b0 = torch.tensor(start.a, dtype=torch.float64), _lower(start.b, n)
    reach = torch.cat([s0[1:], s0[-1:]]) / start.sigma_max  # a_k's unit: the level step k reaches
    da = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    db = torch.zeros(n, n, dtype=torch.float64, requires_grad=True)
    dq = torch.zeros(n - 1, dtype=torch.float64, requires_grad=True)
    mask = torch.tril(torch.ones(n, n, dtype=torch.float64))
    params = [da, db] + ([dq] if fit_sigmas and n > 1 else [])
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(i, iterations) / max(1, iterations))))
    g = torch.Generator().manual_seed(seed)
    x_T, reference = working(x_T), reference.to(dtype)
    calls = 0

    def current():
        a = a0 + da * reach
        b = b0 + db * mask
        q = (s0[1:] * dq.exp()).clamp(sigma_min, start.sigma_max)  # dq = 0: exactly the start's levels
        return a, b, torch.cat([s0[:1], q])

    def output(x, a, b, sig):
        nonlocal calls
        calls += n
        return _solve(denoiser, x, list(sig), [v.to(dtype) for v in a], [[v.to(dtype) for v in row] for row in b],
                      cond)

    def objective(out, ref):
        per = (out - ref).pow(2).flatten(1).mean(1)
        return per.mean() if loss == "mse" else (per + 1e-30).sqrt().mean()

    def rmse(x, ref, params) -> float:
        with torch.no_grad():
            return float((output(x, *params) - ref).pow(2).mean().sqrt())

    if validation is not None:
        x_val, ref_val = working(validation[0]), validation[1].to(dtype)
    frozen = [q for q in getattr(denoiser, "parameters", lambda: [])() if q.requires_grad]
    for q in frozen:  # gradients flow to x and sigma only, not into the model's weights
        q.requires_grad_(False)
    t0, history, best = time.perf_counter(), [], (math.inf, None, -1)
    try:
        for i in range(iterations + 1):
            if batch is None or batch >= len(x_T):
                x, ref = x_T, reference
            else:
                idx = torch.randperm(len(x_T), generator=g)[:batch]
                x, ref = x_T[idx], reference[idx]
            params_now = current()
            if validation is not None and (i % validate_every == 0 or i == iterations):
                score = rmse(x_val, ref_val, params_now)
                if score < best[0]:
                    best = (score, tuple(v.detach().clone() for v in params_now), i)
            if i == iterations:
                break
            value = objective(output(x, *params_now), ref)
            history.append(float(value.detach()))
            if not math.isfinite(history[-1]):
                raise NoisecraftError(f"fitting diverged at iteration {i} (loss {history[-1]}); use a smaller lr")
            opt.zero_grad()
            value.backward()
            opt.step()
            sched.step()
            if log is not None and i % 50 == 0:
                log(f"  iteration {i}: {loss} loss {history[-1]:.4e}")
    finally:
        for q in frozen:
            q.requires_grad_(True)
    seconds = time.perf_counter() - t0
    final = best[1] if best[1] is not None else tuple(t.detach().clone() for t in current())
    initial, fitted = rmse(x_T, reference, (a0, b0, s0)), rmse(x_T, reference, final)
    a, b, sig = final
    solver = FittedSolver(tuple(sig.tolist()), tuple(a.tolist()),
                          tuple(tuple(b[k, :k + 1].tolist()) for k in range(n)),
                          {**start.meta, **(meta or {}), "fit": {
                              "method": "adam", "loss": loss, "iterations": iterations, "lr": lr,
                              "batch": min(batch or len(x_T), len(x_T)), "samples": len(x_T),
                              "validation_samples": 0 if validation is None else len(validation[0]),
                              "chosen_iteration": best[2] if best[1] is not None else iterations,
                              "fit_sigmas": fit_sigmas, "seed": seed, "initial_rmse": initial, "rmse": fitted,
                              "model_calls": calls, "seconds": round(seconds, 1)}})
    return FitResult(solver, initial, fitted, iterations, calls, seconds, history)  # history: the loss per step


LOSSES = ("norm", "mse")

def _lower(rows, n: int) -> torch.Tensor:
    out = torch.zeros(n, n, dtype=torch.float64)
    for k, row in enumerate(rows):
        out[k, :k + 1] = torch.tensor(row, dtype=torch.float64)
    return out
