"""Samplers: pure functions f(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, **options).

`x` starts at sigmas[0] times unit noise (VE view); `sigmas` decreases and ends in 0. See
`samplers._common` for the callback dict and the stateless step form. Look samplers up by name with
`get(name)`, their single steps with `get_step(name)`, and A1111 / k-diffusion names with
`resolve_alias(name) -> (sampler, step schedule or None)`.

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

`expint` is noisecraft's own: DPM-Solver++'s exact exponential integrator with the x0 estimate
interpolated in v = 1 / sqrt(sigma^2 + sigma_data^2) (exact for Gaussian data) and UniPC's free corrector;
see `samplers.expint`.
"""

from __future__ import annotations

import inspect
from functools import partial

from noisecraft.errors import NoisecraftError, unknown_name
from noisecraft.samplers.adaptive import sample_ode
from noisecraft.samplers.ancestral import (
    ancestral_step,
    sample_ddim,
    sample_ddpm,
    sample_euler_ancestral,
    step_ddim,
)
from noisecraft.samplers.dpm_solver import (
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
from noisecraft.samplers.multistep import sample_deis, sample_lms, step_deis, step_lms
from noisecraft.samplers.ode import euler_step, sample_euler, sample_heun, step_euler
from noisecraft.samplers.sde import sample_euler_maruyama, sample_pc, step_euler_maruyama
from noisecraft.samplers.unipc import sample_unipc, step_unipc

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


def options(name: str) -> dict:
    """The options a sampler accepts, with their defaults."""
    params = inspect.signature(get(name)).parameters
    return {k: p.default for k, p in params.items()
            if p.kind is p.KEYWORD_ONLY and k not in ("cond", "generator", "callback")}


__all__ = ["ALIASES", "SAMPLERS", "STEPS", "ancestral_step", "available", "euler_step", "get", "get_step",
           "options", "resolve", "resolve_alias", "sample_ddim", "sample_ddpm", "sample_euler",
           "sample_euler_ancestral", "sample_heun", "sample_ode"]
