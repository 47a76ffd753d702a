"""Samplers: pure functions f(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, **options).

`x` starts at sigmas[0] times unit noise (VE view); `sigmas` decreases and ends in 0. See
`samplers._common` for the callback dict and the stateless step form. Look samplers up by name with
`get(name)`, their single steps with `get_step(name)`, and A1111 / k-diffusion names with
`resolve_alias(name) -> (sampler, step schedule or None)`. A sampler's options are its keyword-only
parameters: `options(name)` gives their defaults, `option_specs(name)` their type, default, meaning and
allowed values (`OPTION_DOCS`), and `check_options(name, options)` converts text values (from the command
line) to the declared types, refusing unknown options and values out of range.

| name          | method                                                   | order | NFE per step |
|---------------|----------------------------------------------------------|-------|--------------|
| ddpm          | ancestral sampling (Ho et al. 2020, Alg. 2)              | SDE   | 1            |
| ddim          | DDIM, eta in [0, 1] (Song et al. 2021, Eq. 12)           | 1     | 1            |
| euler         | Euler on the probability-flow ODE                        | 1     | 1            |
| euler_a       | Euler ancestral (= DDIM eta = 1)                         | SDE   | 1            |
| heun          | EDM Alg. 1 / Alg. 2 (s_churn, s_tmin, s_tmax, s_noise)   | 2     | 2 (last: 1)  |
| dpm_solver_2  | singlestep DPM-Solver-2 (Lu et al. 2022a, Alg. 1)        | 2     | 2 (last: 1)  |
| dpm_solver_3  | singlestep DPM-Solver-3 (Lu et al. 2022a, Alg. 2)        | 3     | 3 (last: 1)  |
| dpmpp_2s      | DPM-Solver++(2S) (Lu et al. 2022b, Alg. 1)               | 2     | 2 (last: 1)  |
| dpmpp_2s_a    | DPM-Solver++(2S) ancestral                               | SDE   | 2 (last: 1)  |
| dpmpp_2m      | DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2)               | 2     | 1            |
| dpmpp_3m      | DPM-Solver++(3M)                                         | 3     | 1            |
| dpmpp_2m_sde  | DPM-Solver++(2M) SDE                                     | SDE   | 1            |
| dpmpp_3m_sde  | DPM-Solver++(3M) SDE                                     | SDE   | 1            |
| unipc         | UniPC-p, bh1/bh2 (Zhao et al. 2023)                      | p + 1 | 1            |
| lms           | linear multistep in sigma (k-diffusion)                  | 4     | 1            |
| deis          | DEIS, log-rho AB (Zhang & Chen 2023)                     | 3     | 1            |
| euler_maruyama| Euler-Maruyama on the reverse SDE (Song et al. 2021)     | SDE   | 1            |
| pc            | predictor-corrector, Langevin corrector, snr (Alg. 1-2)  | SDE   | 1 + M        |
| expint        | Gaussian-basis predictor-corrector exponential integrator | p + 1 | 1            |
| ode           | adaptive RK45 on the probability-flow ODE (reference)    | 5(4)  | adaptive     |
| consistency   | multistep consistency sampling (Song et al. 2023, Alg. 1) | CM   | 1            |
| fitted        | a fitted non-stationary solver from JSON (BNS, Shaul et al. 2024) | fitted | 1      |

`expint` is noisecraft's own: DPM-Solver++'s exact exponential integrator with the x0 estimate
interpolated in v = 1 / sqrt(sigma^2 + sigma_data^2) (exact for Gaussian data) and UniPC's free corrector;
see `samplers.expint`.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from functools import partial

from noisecraft.errors import NoisecraftError, unknown_name
from noisecraft.samplers._common import FINAL_STEPS
from noisecraft.samplers.adaptive import sample_ode
from noisecraft.samplers.ancestral import (
    ancestral_step,
    sample_ddim,
    sample_ddpm,
    sample_euler_ancestral,
    step_ddim,
)
from noisecraft.samplers.consistency import sample_consistency
from noisecraft.samplers.dpm_solver import (
    SOLVER_TYPES,
    sample_dpm_solver,
    sample_dpm_solver_3,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_2s,
    sample_dpmpp_2s_ancestral,
    sample_dpmpp_3m,
    sample_dpmpp_3m_sde,
    step_dpmpp,
)
from noisecraft.samplers.expint import sample_expint, step_expint
from noisecraft.samplers.fitted import sample_fitted
from noisecraft.samplers.multistep import EPS_FINAL_STEPS, sample_deis, sample_lms, step_deis, step_lms
from noisecraft.samplers.ode import euler_step, sample_euler, sample_heun, step_euler
from noisecraft.samplers.sde import NORMS, PREDICTORS, sample_euler_maruyama, sample_pc, step_euler_maruyama
from noisecraft.samplers.unipc import VARIANTS, sample_unipc, step_unipc

SAMPLERS = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "euler_a": sample_euler_ancestral,
    "heun": sample_heun,
    "dpm_solver_2": sample_dpm_solver,
    "dpm_solver_3": sample_dpm_solver_3,
    "dpmpp_2s": sample_dpmpp_2s,
    "dpmpp_2s_a": sample_dpmpp_2s_ancestral,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_3m": sample_dpmpp_3m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_3m_sde": sample_dpmpp_3m_sde,
    "unipc": sample_unipc,
    "lms": sample_lms,
    "deis": sample_deis,
    "euler_maruyama": sample_euler_maruyama,
    "pc": sample_pc,
    "expint": sample_expint,
    "ode": sample_ode,
    "consistency": sample_consistency,
    "fitted": sample_fitted,
}

# One line on each sampler (`noisecraft samplers`; the table above, in short).
DESCRIPTIONS = {
    "ddpm": "DDPM ancestral sampling (Ho et al. 2020, Alg. 2); stochastic",
    "ddim": "DDIM (Song et al. 2021, Eq. 12); deterministic at eta = 0, DDPM at eta = 1",
    "euler": "Euler on the probability-flow ODE; first order",
    "euler_a": "Euler ancestral (k-diffusion; the DDIM step with eta = 1); stochastic",
    "heun": "Heun, EDM Alg. 1, or Alg. 2 with s_churn > 0 (Karras et al. 2022); second order",
    "dpm_solver_2": "singlestep DPM-Solver-2 (Lu et al. 2022a, Alg. 1); second order, 2 NFE per step",
    "dpm_solver_3": "singlestep DPM-Solver-3 (Lu et al. 2022a, Alg. 2); third order, 3 NFE per step",
    "dpmpp_2s": "DPM-Solver++(2S) (Lu et al. 2022b, Alg. 1); second order, 2 NFE per step",
    "dpmpp_2s_a": "DPM-Solver++(2S) ancestral (k-diffusion); stochastic, 2 NFE per step",
    "dpmpp_2m": "DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2); second-order multistep",
    "dpmpp_3m": "DPM-Solver++(3M) (Lu et al. 2022b, App. B); third-order multistep",
    "dpmpp_2m_sde": "DPM-Solver++(2M) SDE; stochastic multistep",
    "dpmpp_3m_sde": "DPM-Solver++(3M) SDE; stochastic multistep",
    "unipc": "UniPC-p, predictor + corrector (Zhao et al. 2023); order p + 1, 1 NFE per step",
    "lms": "linear multistep in sigma (k-diffusion); up to fourth order",
    "deis": "DEIS, log-rho Adams-Bashforth (Zhang & Chen 2023); up to third order",
    "euler_maruyama": "Euler-Maruyama on the reverse SDE (Song et al. 2021, Eq. 6); stochastic",
    "pc": "predictor-corrector with a Langevin corrector (Song et al. 2021, Alg. 1-2); stochastic",
    "expint": "noisecraft's Gaussian-basis exponential integrator with a corrector (samplers.expint)",
    "ode": "adaptive RK45 on the probability-flow ODE (a reference; adaptive NFE)",
    "consistency": "multistep consistency sampling (Song et al. 2023, Alg. 1), for consistency students; stochastic",
    "fitted": "a fitted non-stationary linear solver from solver=FILE.json (BNS, Shaul et al. 2024; "
              "`noisecraft schedule fit-solver`)",
}

# The stateless step(x, sigma, sigma_next, denoised, state, **options) -> (x, state) of every sampler
# that takes one denoiser evaluation per step.
STEPS = {
    "ddpm": partial(step_ddim, eta=1.0),
    "ddim": step_ddim,
    "euler": step_euler,
    "euler_a": partial(step_ddim, eta=1.0),
    "dpmpp_2m": partial(step_dpmpp, order=2),
    "dpmpp_3m": partial(step_dpmpp, order=3),
    "dpmpp_2m_sde": partial(step_dpmpp, order=2, eta=1.0),
    "dpmpp_3m_sde": partial(step_dpmpp, order=3, eta=1.0),
    "unipc": step_unipc,
    "lms": step_lms,
    "deis": step_deis,
    "euler_maruyama": step_euler_maruyama,
    "expint": step_expint,
}

# Names users bring from A1111 / k-diffusion / diffusers front-ends (case-insensitive). A trailing
# " karras", " exponential" or " ays" names the step schedule (`resolve_alias`).
ALIASES = {
    "euler a": "euler_a", "euler_ancestral": "euler_a", "k_euler_a": "euler_a", "k_euler": "euler",
    "k_heun": "heun", "heun (edm)": "heun", "edm": "heun",
    "lms": "lms", "k_lms": "lms",
    "dpm2": "dpm_solver_2", "k_dpm_2": "dpm_solver_2", "dpm-solver-2": "dpm_solver_2", "dpm-solver-3": "dpm_solver_3",
    "dpm++ 2s": "dpmpp_2s", "dpm++ 2s a": "dpmpp_2s_a", "k_dpmpp_2s_a": "dpmpp_2s_a",
    "dpm++ 2m": "dpmpp_2m", "k_dpmpp_2m": "dpmpp_2m", "dpmsolver++": "dpmpp_2m", "dpm-solver++": "dpmpp_2m",
    "dpm++ 3m": "dpmpp_3m", "dpm++ 2m sde": "dpmpp_2m_sde", "k_dpmpp_2m_sde": "dpmpp_2m_sde",
    "dpm++ 3m sde": "dpmpp_3m_sde", "k_dpmpp_3m_sde": "dpmpp_3m_sde",
    "unipc": "unipc", "deis": "deis", "ddim": "ddim", "ddpm": "ddpm",
    "euler maruyama": "euler_maruyama", "euler-maruyama": "euler_maruyama",
    "predictor-corrector": "pc", "predictor_corrector": "pc",
    "dpm adaptive": "ode", "rk45": "ode", "adaptive": "ode",
    "lcm": "consistency", "cm": "consistency", "consistency model": "consistency",
}
ALIAS_SCHEDULES = {"karras": "karras", "exponential": "exponential", "ays": "ays"}


def available() -> list[str]:
    """The sampler names accepted by `get`."""
    return sorted(SAMPLERS)


def resolve_alias(name: str) -> tuple[str, str | None]:
    """(sampler name, implied step schedule or None) for a sampler name or a front-end alias such as
    "DPM++ 2M Karras" -> ("dpmpp_2m", "karras")."""
    key = " ".join(str(name).strip().lower().split())
    schedule = None
    head, _, tail = key.rpartition(" ")
    if head and tail in ALIAS_SCHEDULES:
        key, schedule = head, ALIAS_SCHEDULES[tail]
    key = ALIASES.get(key, key)
    if key not in SAMPLERS:
        raise NoisecraftError(f"unknown sampler {name!r}; allowed: {', '.join(available())}, or an A1111 / "
                              f"k-diffusion name such as 'Euler a', 'DPM++ 2M Karras' (see samplers.ALIASES)")
    return key, schedule


def resolve(name: str) -> str:
    """The registered sampler name for `name` or an alias (an implied step schedule is dropped)."""
    return resolve_alias(name)[0]


def aliases_of(name: str) -> list[str]:
    """The front-end names (`ALIASES`) that resolve to sampler `name`, other than the name itself."""
    return [alias for alias, key in ALIASES.items() if key == name and alias != name]


def get(name: str):
    """The sampler function registered under `name` (or a known alias; see `resolve_alias` for the
    step schedule an alias implies)."""
    return SAMPLERS[resolve(name)]


def get_step(name: str):
    """The stateless step(x, sigma, sigma_next, denoised, state, **options) -> (x, state) of a sampler."""
    key = resolve(name)
    if key not in STEPS:
        raise unknown_name("sampler with a single-step form", name, STEPS)
    return STEPS[key]


# ------------------------------------------------------------------------------------------ options
NOT_OPTIONS = ("cond", "generator", "callback")  # keyword-only parameters of every sampler, not options


def _doc(meaning: str, *, bounds: tuple | None = None, choices: tuple | None = None) -> dict:
    return {"meaning": meaning, "bounds": bounds, "choices": choices}


# What each option means and the values it takes: bounds (lo, hi) for numbers, or choices. They restate
# the checks in the sampler functions (tests/samplers/test_api.py holds each against its sampler).
OPTION_DOCS = {
    "eta": _doc("noise added back per step: 0 = deterministic, 1 = the DDPM posterior's", bounds=(0.0, 1.0)),
    "s_churn": _doc("EDM S_churn: noise raised per step by gamma = min(S_churn / N, sqrt(2) - 1); 0 = none",
                    bounds=(0.0, math.inf)),
    "s_tmin": _doc("EDM S_tmin: churn only where sigma >= s_tmin", bounds=(0.0, math.inf)),
    "s_tmax": _doc("EDM S_tmax: churn only where sigma <= s_tmax", bounds=(0.0, math.inf)),
    "s_noise": _doc("scale of the fresh noise (EDM S_noise; 1 = exact)", bounds=(0.0, math.inf)),
    "final": _doc("the last step to sigma = 0: denoise returns D, extrapolate extrapolates D to 0 in sigma^2",
                  choices=FINAL_STEPS),
    "order": _doc("order of the method (model outputs combined per step)", choices=(1, 2, 3)),
    "solver_type": _doc("second-order term: midpoint (Lu et al. 2022b) or heun (exact phi_2)", choices=SOLVER_TYPES),
    "legacy_3m": _doc("the 3M term of k-diffusion / diffusers (half the exact one: second order)",
                      choices=(False, True)),
    "variant": _doc("UniPC's B(h) (Zhao et al. 2023, Sec. 3.3)", choices=VARIANTS),
    "corrector": _doc("apply the corrector after each predictor step", choices=(False, True)),
    "lower_order_final": _doc("cap the predictor order at the steps left (steadies short schedules)",
                              choices=(False, True)),
    "sigma_data": _doc("standard deviation of the data, for the Gaussian basis", bounds=(1e-6, math.inf)),
    "predictor": _doc("predictor step: euler_maruyama (reverse diffusion) or ancestral (DDPM)", choices=PREDICTORS),
    "corrector_steps": _doc("Langevin corrector steps per noise level", bounds=(0, math.inf)),
    "snr": _doc("signal-to-noise ratio r of the Langevin corrector (0.16: Song et al.'s VE CIFAR-10)",
                bounds=(0.0, math.inf)),
    "norms": _doc("Langevin step size from norms averaged over the batch, or each sample's own", choices=NORMS),
    "rtol": _doc("relative tolerance of the adaptive step", bounds=(0.0, math.inf)),
    "atol": _doc("absolute tolerance of the adaptive step", bounds=(0.0, math.inf)),
    "sigma_floor": _doc("lowest sigma integrated to; D there is the result",  # > 0: it takes log(sigma_floor)
                        bounds=(1e-300, math.inf)),
    "dtype": _doc("working torch.dtype of the solve"),
    "stats": _doc("a dict the sampler fills with nfe, steps and rejected"),
    "solver": _doc("the JSON file of a fitted solver (`noisecraft schedule fit-solver`)"),
}
# Where one option name means different things in different samplers.
_CM_SIGMA_MIN = _doc("the boundary eps of the consistency model (re-noise by sqrt(tau^2 - eps^2)); 0 = the "
                     "student's own", bounds=(0.0, math.inf))
_SDE_ETA = _doc("SDE noise: 0 = the ODE solver, 1 = the SDE variant (Lu et al. 2022b, Sec. 5)",
                bounds=(0.0, math.inf))
_EPS_FINAL = _doc("the last step to sigma = 0: step (the multistep formula), denoise (D) or extrapolate",
                  choices=EPS_FINAL_STEPS)
# Where a sampler differs from OPTION_DOCS.
SAMPLER_OPTION_DOCS = {
    "dpm_solver_2": {"order": {"choices": (2, 3)}},
    "dpm_solver_3": {"order": {"choices": (2, 3)}},
    **{name: {"eta": _SDE_ETA} for name in ("dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde", "dpmpp_3m_sde")},
    "lms": {"order": {"choices": (1, 2, 3, 4)}, "final": _EPS_FINAL},
    "deis": {"final": _EPS_FINAL},
    "consistency": {"sigma_min": _CM_SIGMA_MIN},
}
_TYPES = {"float": float, "int": int, "bool": bool, "str": str}


@dataclass(frozen=True)
class Option:
    """One sampler option: its keyword, type (float, int, bool or str; None where a value cannot be
    written as text), default, one-line meaning, and the values it takes (bounds (lo, hi) or choices)."""

    name: str
    type: type | None
    default: object
    meaning: str
    bounds: tuple | None = None
    choices: tuple | None = None

    def allowed(self) -> str:
        """The values it takes, in words ("" = any)."""
        if self.choices is not None:
            return "one of " + ", ".join(map(_text, self.choices))
        if self.bounds is None:
            return ""
        lo, hi = self.bounds
        return f">= {_text(lo)}" if hi == math.inf else f"in [{_text(lo)}, {_text(hi)}]"

    def describe(self) -> str:
        """E.g. "s_churn (float, default 0, >= 0: EDM S_churn: ...)"."""
        kind = self.type.__name__ if self.type else "Python API only"
        allowed = f", {self.allowed()}" if self.allowed() else ""
        return f"{self.name} ({kind}, default {_text(self.default)}{allowed}: {self.meaning})"


def _text(value) -> str:
    """A value as it is written on the command line."""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def _declared_type(p: inspect.Parameter):
    ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
    return _TYPES.get(ann, type(p.default) if type(p.default) in _TYPES.values() else None)


def option_specs(name: str) -> dict[str, Option]:
    """The options of a sampler (or alias): its keyword-only parameters but cond, generator and callback,
    with their declared type and default, and the meaning and allowed values from OPTION_DOCS."""
    key = resolve(name)
    specs = {}
    for k, p in inspect.signature(SAMPLERS[key]).parameters.items():
        if p.kind is p.KEYWORD_ONLY and k not in NOT_OPTIONS:
            doc = {**OPTION_DOCS.get(k, _doc("")), **SAMPLER_OPTION_DOCS.get(key, {}).get(k, {})}
            specs[k] = Option(k, _declared_type(p), p.default, **doc)
    return specs


def options(name: str) -> dict:
    """The options a sampler accepts, with their defaults (`option_specs` has their types and meanings)."""
    return {k: o.default for k, o in option_specs(name).items()}


def check_options(name: str, options: dict | None) -> dict:
    """`options` for sampler `name` with each value checked and converted to its declared type; text
    values, as the command line gives them ("0.5", "3", "true", "extrapolate"), are parsed. Raises
    NoisecraftError naming the sampler and the unknown option with the allowed ones, or the bad value
    with the values allowed."""
    key = resolve(name)
    specs = option_specs(key)
    checked = {}
    for k, value in (options or {}).items():
        if k not in specs:
            allowed = ", ".join(o.describe() for o in specs.values()) or "none (it takes no options)"
            raise NoisecraftError(f"sampler {key!r} has no option {k!r}; allowed: {allowed}")
        checked[k] = _checked_value(f"sampler {key!r}: option {k!r}", specs[k], value)
    return checked


def _checked_value(where: str, option: Option, value):
    if isinstance(value, str):
        if option.type is None:
            raise NoisecraftError(f"{where} takes a Python object ({option.meaning}), not text")
        value = _parse(where, option.type, value.strip())
    elif option.type is float and type(value) is int:
        value = float(value)
    elif option.type is not None and type(value) is not option.type:
        raise NoisecraftError(f"{where} must be a {option.type.__name__}; got {value!r}")
    ok = (option.choices is None or value in option.choices) and (
        option.bounds is None or option.bounds[0] <= value <= option.bounds[1])
    if not ok:
        raise NoisecraftError(f"{where} must be {option.allowed()}; got {_text(value)}")
    return value


def _parse(where: str, kind: type, text: str):
    if kind is bool:
        if text.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return text.lower() in ("true", "1", "yes", "on")
        raise NoisecraftError(f"{where} must be true or false; got {text!r}")
    try:
        return kind(text)
    except ValueError:
        what = {int: "an integer", float: "a number"}.get(kind, kind.__name__)
        raise NoisecraftError(f"{where} must be {what}; got {text!r}") from None


__all__ = ["ALIASES", "DESCRIPTIONS", "OPTION_DOCS", "SAMPLERS", "STEPS", "Option", "aliases_of", "ancestral_step",
           "available", "check_options", "euler_step", "get", "get_step", "option_specs", "options", "resolve",
           "resolve_alias", "sample_ddim", "sample_ddpm", "sample_euler",
           "sample_euler_ancestral", "sample_heun", "sample_ode"]
