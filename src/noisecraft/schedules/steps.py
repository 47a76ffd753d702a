"""Sampling step schedules: how a budget of steps is spent between sigma_max and 0.

Every function returns a strictly decreasing float64 tensor of n + 1 noise levels whose last entry
is exactly 0 (the VE view of DESIGN.md). Discrete spacings reproduce diffusers' `timestep_spacing`
choices ("leading", "trailing", "linspace"; Lin et al. 2024, Table 2) on integer timesteps.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from noisecraft.errors import NoisecraftError, unknown_name
from noisecraft.schedules.training import DiscreteSchedule, Schedule

DISCRETE_SPACINGS = ("leading", "trailing", "linspace")
STEP_SCHEDULES = DISCRETE_SPACINGS + ("karras", "exponential", "logsnr", "uniform", "ays", "consistency")

# Align Your Steps (Sabour et al. 2024), the published 10-step schedule for Stable Diffusion 1.5
# (sigma_max 14.6146 ... sigma_min 0.0292; the last knot becomes 0 when sampling).
AYS_SD15 = (14.6146, 6.4745, 3.8636, 2.6946, 1.8841, 1.3943, 0.9642, 0.6523, 0.3977, 0.1515, 0.0292)


def discrete_timesteps(num_timesteps: int, steps: int, spacing: str = "trailing", offset: int = 0) -> np.ndarray:
    """Integer timesteps, decreasing, as diffusers' `set_timesteps` computes them.

    "trailing" is round(T - i T / n) - 1 for i = 0 .. n - 1, exactly n values (with T / n rounded as
    numpy's arange rounds it, so that ties round as in diffusers). diffusers computes it as
    np.arange(T, 0, -T / n), which for some n (e.g. T = 1000, n = 233) yields one element too many from
    float rounding: a final timestep -1, i.e. an index that wraps around to sigma_max. Elsewhere the two
    are identical (tests/core/test_schedules.py)."""
    if spacing == "linspace":
        ts = np.linspace(0, num_timesteps - 1, steps).round()[::-1]
    elif spacing == "leading":
        ratio = num_timesteps // steps
        ts = (np.arange(0, steps) * ratio).round()[::-1] + offset
    elif spacing == "trailing":
        ratio = num_timesteps / steps
        delta = (num_timesteps - ratio) - num_timesteps  # the step np.arange really uses (ties round alike)
        ts = np.round(num_timesteps + np.arange(steps) * delta) - 1
    else:
        raise unknown_name("timestep spacing", spacing, DISCRETE_SPACINGS)
    return ts.astype(np.int64)


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022, Eq. 5: sigma_i = (s_max^(1/rho) + i/(n-1) (s_min^(1/rho) - s_max^(1/rho)))^rho."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((hi + ramp * (lo - hi)) ** rho)


def exponential_sigmas(sigma_min: float, sigma_max: float, steps: int) -> torch.Tensor:
    """Uniform in log sigma, i.e. uniform in log-SNR = -2 log sigma (Lu et al. 2022, DPM-Solver)."""
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=torch.float64).exp())


def loglinear_interp(knots, n: int) -> torch.Tensor:
    """n values through decreasing `knots`, piecewise linear in log sigma over an even grid
    (Sabour et al. 2024's recipe for other step counts)."""
    knots = torch.as_tensor(knots, dtype=torch.float64)
    xs = torch.linspace(0, 1, len(knots), dtype=torch.float64)
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    idx = torch.searchsorted(xs, t).clamp(1, len(xs) - 1)
    w = (t - xs[idx - 1]) / (xs[idx] - xs[idx - 1])
    logs = knots.log()
    out = (logs[idx - 1] + w * (logs[idx] - logs[idx - 1])).exp()
    out[0], out[-1] = knots[0], knots[-1]  # the end points exactly, not through exp(log(.))
    return out


def load_sigmas(path, steps: int | None = None) -> torch.Tensor:
    """The sigmas of a schedule saved by `noisecraft schedule optimise` (`optimize.OptimizedSchedule.save`);
    for another step count, its positive levels (sigma_max .. sigma_{n-1}) are interpolated log-linearly to
    `steps` levels (Sabour et al. 2024's recipe) and 0 appended."""
    try:
        data = json.loads(Path(path).read_text())
        sigmas = torch.tensor(data["sigmas"], dtype=torch.float64)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise NoisecraftError(f"cannot read a step schedule from {path}: {e}") from e
    if sigmas.ndim != 1 or len(sigmas) < 2 or sigmas[-1] != 0 or not (sigmas[1:] < sigmas[:-1]).all():
        raise NoisecraftError(f"{path}: sigmas must decrease and end in 0")
    if steps is None or steps == len(sigmas) - 1:
        return sigmas
    positive = loglinear_interp(sigmas[:-1], steps)
    return torch.cat([positive, positive.new_zeros(1)])


def ays_sigmas(sigma_min: float, sigma_max: float, steps: int) -> torch.Tensor:
    """Align Your Steps (Sabour et al. 2024): the SD 1.5 knots, log-linearly interpolated to `steps` + 1
    values, the last set to 0; on another schedule the knots are mapped affinely in log sigma from
    [0.0292, 14.6146] onto [sigma_min, sigma_max]."""
    lo, hi = math.log(AYS_SD15[-1]), math.log(AYS_SD15[0])
    a = (math.log(sigma_max) - math.log(sigma_min)) / (hi - lo)
    knots = [math.exp(math.log(sigma_min) + a * (math.log(k) - lo)) for k in AYS_SD15]
    sigmas = loglinear_interp(knots, steps + 1)
    sigmas[-1] = 0.0
    return sigmas


def consistency_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> torch.Tensor:
    """The levels of multistep consistency sampling (Song et al. 2023, Alg. 1; samplers.consistency): the Karras
    ramp (Eq. 5) over steps + 1 levels without its last one, sigma_min, where a consistency model is the identity
    (re-noising there would waste a step); then 0. One step: [sigma_max, 0]."""
    return _append_zero(karras_sigmas(sigma_min, sigma_max, steps + 1, rho)[:-2])


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def _check_steps(steps) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise NoisecraftError(f"steps must be an integer >= 1, got {steps!r}")


def get_sigmas(schedule: Schedule, steps: int, kind: str = "trailing", *, rho: float = 7.0,
               offset: int | None = None) -> torch.Tensor:
    """The n + 1 sampling noise levels for `steps` denoiser steps on `schedule`.

    kind: "leading" | "trailing" | "linspace" (integer timesteps, discrete schedules only),
    "karras" (rho), "exponential" or its synonym "logsnr" (uniform in log sigma = uniform in log-SNR),
    "uniform" (uniform in the schedule's timestep), "ays" (Align Your Steps), "consistency" (the levels of
    multistep consistency sampling, `consistency_sigmas`), or the path of a JSON
    schedule written by `noisecraft schedule optimise` (interpolated log-linearly to `steps`).
    offset: added to every "leading" timestep (diffusers' `steps_offset`; Stable Diffusion's schedulers use 1);
    None takes the schedule's own `steps_offset` attribute (a schedule read from a diffusers scheduler config
    has one), else 0. Other kinds ignore it, as diffusers' spacings do.
    """
    _check_steps(steps)
    if offset is None:
        offset = int(getattr(schedule, "steps_offset", 0) or 0)
    if str(kind).endswith(".json"):
        return load_sigmas(kind, steps)
    if kind in DISCRETE_SPACINGS:
        if not isinstance(schedule, DiscreteSchedule):
            raise NoisecraftError(
                f"step schedule {kind!r} needs a discrete schedule; {schedule.name!r} is continuous; "
                f"use one of: karras, exponential, uniform"
            )
        T = schedule.num_timesteps
        if kind != "leading":
            offset = 0
        elif offset != 0:
            limit = T - (steps - 1) * (T // steps)  # the largest leading timestep, (n - 1) (T // n) + offset, < T
            if isinstance(offset, bool) or not isinstance(offset, int) or not 0 < offset < limit:
                raise NoisecraftError(f"the leading step offset must be an integer in [0, {limit}) for {steps} "
                                      f"steps on {T} timesteps (the largest timestep stays below {T}), got {offset!r}")
        ts = discrete_timesteps(T, steps, kind, offset)
        return _append_zero(schedule.sigmas[torch.from_numpy(ts.copy())])
    if kind == "karras":
        return karras_sigmas(schedule.sigma_min, schedule.sigma_max, steps, rho)
    if kind in ("exponential", "logsnr"):
        return exponential_sigmas(schedule.sigma_min, schedule.sigma_max, steps)
    if kind == "ays":
        return ays_sigmas(schedule.sigma_min, schedule.sigma_max, steps)
    if kind == "consistency":
        return consistency_sigmas(schedule.sigma_min, schedule.sigma_max, steps, rho)
    if kind == "uniform":
        return _append_zero(_uniform_t_sigmas(schedule, steps))
    raise unknown_name("step schedule", kind, STEP_SCHEDULES + ("<file>.json",))


def _uniform_t_sigmas(schedule: Schedule, steps: int) -> torch.Tensor:
    """Uniform in the schedule's own time variable, from sigma_max down to sigma_min."""
    if isinstance(schedule, DiscreteSchedule):
        t = torch.linspace(schedule.num_timesteps - 1, 0, steps, dtype=torch.float64)
        return schedule.t_to_sigma(t)
    if schedule.name == "vp":
        t = torch.linspace(1, schedule.eps_t, steps, dtype=torch.float64)
        return schedule.sigma(t)
    if schedule.name == "flow":  # uniform in the unshifted time, then SD3's shift (Eq. 23); same end points
        lo, hi = (schedule.unshift_t(torch.tensor(v, dtype=torch.float64)) for v in (schedule.t_min, schedule.t_max))
        t = schedule.shift_t(torch.linspace(float(hi), float(lo), steps, dtype=torch.float64))
        t[0], t[-1] = schedule.t_max, schedule.t_min
        return t / (1 - t)
    # ve / edm: the VE SDE's time is log-uniform in sigma
    return exponential_sigmas(schedule.sigma_min, schedule.sigma_max, steps)[:-1]
