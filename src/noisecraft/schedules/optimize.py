"""Step schedules optimised for a given denoiser and sampler.

Like Align Your Steps (Sabour et al. 2024), the noise levels are chosen for the model at hand; unlike
AYS's KL upper bound, the objective here is the quantity the benchmark measures: the mean squared
distance between the sampler's output and the exact probability-flow ODE solution from the same noise
(computed once with the adaptive solver, `samplers.sample_ode`), over a batch of noise.

Search: the n - 1 inner levels sigma_1 .. sigma_{n-1} (sigma_0 = sigma_max and sigma_n = 0 are fixed;
sigma_{n-1} >= sigma_min keeps the denoiser inside its training range), gradient-free:

- "de": differential evolution (Storn & Price 1997, DE/rand/1/bin) over the fractions f_i in [0.02, 0.98]
  with log sigma_i = log sigma_{i-1} - f_i (log sigma_{i-1} - log sigma_min), so every candidate is a
  valid decreasing schedule; the population starts from the given schedules plus random ones (seeded),
  and the best is polished by the pattern search below with the last 20% of the budget;
- "pattern": coordinate pattern search (Hooke & Jeeves 1961) on q_i = log sigma_i: each knot in turn tries
  q_i +- delta, keeping a move that lowers the loss and the ordering; delta halves after a sweep without
  improvement, down to `min_delta`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from noisecraft.errors import NoisecraftError
from noisecraft.schedules.steps import load_sigmas  # the reader of the files OptimizedSchedule.save writes

__all__ = ["OptimizedSchedule", "load_sigmas", "optimize_sigmas", "reference_solution"]


@dataclass(frozen=True)
class OptimizedSchedule:
    sigmas: list[float]           # n + 1 levels, decreasing, ending in 0
    loss: float                   # final mean squared error to the reference (optimisation batch)
    initial_loss: float           # the same for the initial schedule
    evaluations: int              # sampler runs spent
    sampler: str = ""             # the sampler it was optimised for
    options: dict = field(default_factory=dict)  # that sampler's options
    meta: dict = field(default_factory=dict)     # free-form provenance (problem, batch, seed, init)

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")


def reference_solution(denoiser, x_T: torch.Tensor, sigma_max: float, *, rtol: float = 1e-7, atol: float = 1e-7,
                       cond=None) -> torch.Tensor:
    """The probability-flow ODE solution at sigma = 0 from x_T at sigma_max (adaptive RK45, float64)."""
    from noisecraft.samplers import sample_ode

    sigmas = torch.tensor([sigma_max, 0.0], dtype=torch.float64)
    return sample_ode(denoiser, x_T.to(torch.float64), sigmas, cond=cond, rtol=rtol, atol=atol)


def _feasible(q: list[float], q_max: float, q_min: float, gap: float) -> bool:
    levels = [q_max] + q
    return all(a - b >= gap for a, b in zip(levels, levels[1:])) and q[-1] >= q_min


METHODS = ("de", "pattern")


def optimize_sigmas(denoiser, sampler, initial_sigmas, x_T: torch.Tensor, reference: torch.Tensor, *,
                    sigma_min: float, options: dict | None = None, method: str = "de", delta: float = 0.25,
                    min_delta: float = 0.01, max_evaluations: int = 2000, gap: float = 1e-3, seed: int = 0,
                    cond=None, name: str = "", meta: dict | None = None) -> OptimizedSchedule:
    """Choose sigma_1 .. sigma_{n-1} minimising mean((sampler(denoiser, x_T, sigmas) - reference)^2).

    sampler: a sampler function (`noisecraft.samplers.get(name)`); initial_sigmas: a starting schedule
    (n + 1 levels ending in 0; sigmas[0] is kept) or a list of them; x_T: the start at sigmas[0] (B, ...);
    method: "de" (global, then polished) or "pattern" (local; from each start in turn, sharing the budget).
    """
    if method not in METHODS:
        raise NoisecraftError(f"optimisation method must be one of {', '.join(METHODS)}; got {method!r}")
    several = isinstance(initial_sigmas, (list, tuple)) and len(initial_sigmas) > 0 and \
        torch.as_tensor(initial_sigmas[0]).ndim == 1
    starts = [torch.as_tensor(s, dtype=torch.float64) for s in (initial_sigmas if several else [initial_sigmas])]
    for init in starts:
        if init.ndim != 1 or len(init) < 2 or init[-1] != 0 or len(init) != len(starts[0]):
            raise NoisecraftError("initial sigmas must be 1-D schedules of one length, at least 2 levels, ending in 0")
    if method == "de" and len(starts[0]) > 2:
        return _differential_evolution(denoiser, sampler, starts, x_T, reference, sigma_min, options,
                                       max_evaluations, seed, cond, name, meta, min_delta, gap)
    if len(starts) > 1:
        budget = max_evaluations // len(starts)
        runs = [optimize_sigmas(denoiser, sampler, s, x_T, reference, sigma_min=sigma_min, options=options,
                                method="pattern", delta=delta, min_delta=min_delta, max_evaluations=budget, gap=gap,
                                cond=cond, name=name, meta=meta) for s in starts]
        best = min(runs, key=lambda r: r.loss)
        return OptimizedSchedule(best.sigmas, best.loss, min(r.initial_loss for r in runs),
                                 sum(r.evaluations for r in runs), name, dict(options or {}), dict(meta or {}))
    init = starts[0]
    if not 0 < min_delta <= delta:
        raise NoisecraftError(f"need 0 < min_delta <= delta, got {min_delta}, {delta}")
    sigma_max = float(init[0])
    q_max, q_min = math.log(sigma_max), math.log(sigma_min)
    q = [math.log(float(s)) for s in init[1:-1]]
    options = dict(options or {})
    evaluations = 0

    def loss(q) -> float:
        nonlocal evaluations
        evaluations += 1
        sigmas = torch.tensor([sigma_max] + [math.exp(v) for v in q] + [0.0], dtype=torch.float64)
        out = sampler(denoiser, x_T, sigmas, cond=cond, **options)
        err = float((out.to(torch.float64) - reference.to(torch.float64)).pow(2).mean())
        return err if math.isfinite(err) else math.inf

    if q and not _feasible(q, q_max, q_min, gap):
        q = [min(v, q_max - gap * (i + 1)) for i, v in enumerate(q)]
        q = [max(v, q_min + gap * (len(q) - 1 - i)) for i, v in enumerate(q)]
    best = first = loss(q)
    while q and delta >= min_delta and evaluations < max_evaluations:
        improved = False
        for i in range(len(q)):
            for sign in (1.0, -1.0):
                trial = q[:i] + [q[i] + sign * delta] + q[i + 1:]
                if evaluations >= max_evaluations or not _feasible(trial, q_max, q_min, gap):
                    continue
                value = loss(trial)
                if value < best:
                    q, best, improved = trial, value, True
                    break
        if not improved:
            delta /= 2
    sigmas = [sigma_max] + [math.exp(v) for v in q] + [0.0]
    return OptimizedSchedule(sigmas, best, first, evaluations, name, options, dict(meta or {}))


def _to_fractions(sigmas: torch.Tensor, sigma_min: float) -> list[float]:
    lo, q = math.log(sigma_min), [math.log(float(v)) for v in sigmas[:-1]]
    return [min(0.98, max(0.02, (q[i - 1] - q[i]) / (q[i - 1] - lo))) for i in range(1, len(q))]


def _from_fractions(f, sigma_max: float, sigma_min: float) -> torch.Tensor:
    lo, q = math.log(sigma_min), [math.log(sigma_max)]
    for fi in f:
        q.append(q[-1] - float(fi) * (q[-1] - lo))
    return torch.tensor([sigma_max] + [math.exp(v) for v in q[1:]] + [0.0], dtype=torch.float64)


def _differential_evolution(denoiser, sampler, starts, x_T, reference, sigma_min, options, budget, seed, cond,
                            name, meta, min_delta, gap) -> OptimizedSchedule:
    """DE/rand/1/bin (F = 0.7, CR = 0.9) on the fractions, then a pattern-search polish."""
    sigma_max, options = float(starts[0][0]), dict(options or {})
    g = torch.Generator().manual_seed(seed)

    def loss(f) -> float:
        sigmas = _from_fractions(f, sigma_max, sigma_min)
        if not (sigmas[1:] < sigmas[:-1]).all():  # levels merged in floating point
            return math.inf
        out = sampler(denoiser, x_T, sigmas, cond=cond, **options)
        err = float((out.to(torch.float64) - reference.to(torch.float64)).pow(2).mean())
        return err if math.isfinite(err) else math.inf

    dim = len(starts[0]) - 2
    size = min(40, max(10, 4 * dim))
    pop = torch.rand(size, dim, generator=g, dtype=torch.float64) * 0.96 + 0.02
    for i, s in enumerate(starts[:size]):
        pop[i] = torch.tensor(_to_fractions(torch.as_tensor(s, dtype=torch.float64), sigma_min), dtype=torch.float64)
    fit = [loss(p) for p in pop]
    first, evaluations = min(fit[: len(starts)]), size
    de_budget = max(size, int(0.8 * budget))
    while evaluations + size <= de_budget:
        for i in range(size):
            a, b, c = pop[torch.randperm(size, generator=g)[:3]]
            mutant = (a + 0.7 * (b - c)).clamp(0.02, 0.98)
            cross = torch.rand(dim, generator=g) < 0.9
            cross[torch.randint(dim, (1,), generator=g)] = True
            trial = torch.where(cross, mutant, pop[i])
            value = loss(trial)
            evaluations += 1
            if value <= fit[i]:
                pop[i], fit[i] = trial, value
    best = min(range(size), key=fit.__getitem__)
    polish = optimize_sigmas(denoiser, sampler, _from_fractions(pop[best], sigma_max, sigma_min), x_T, reference,
                             sigma_min=sigma_min, options=options, method="pattern", delta=0.05,
                             min_delta=min_delta, max_evaluations=max(1, budget - evaluations), gap=gap, cond=cond)
    return OptimizedSchedule(polish.sigmas, polish.loss, first, evaluations + polish.evaluations, name, options,
                             dict(meta or {}))
