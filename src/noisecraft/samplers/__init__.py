"""Samplers: pure functions f(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, **options).

`x` starts at sigmas[0] times unit noise (VE view); `sigmas` decreases and ends in 0. See
`samplers._common` for the callback dict. Look samplers up by name with `get(name)`.
"""

from __future__ import annotations

from noisecraft.errors import unknown_name
from noisecraft.samplers.ancestral import ancestral_step, sample_ddim, sample_ddpm, sample_euler_ancestral
from noisecraft.samplers.ode import euler_step, sample_euler, sample_heun

SAMPLERS = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "euler_a": sample_euler_ancestral,
    "heun": sample_heun,
}

# Names users bring from A1111 / k-diffusion front-ends (case-insensitive in `get`).
ALIASES = {
    "euler a": "euler_a",
    "euler_ancestral": "euler_a",
}


def available() -> list[str]:
    """The sampler names accepted by `get`."""
    return sorted(SAMPLERS)


def resolve(name: str) -> str:
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in SAMPLERS:
        raise unknown_name("sampler", name, SAMPLERS)
    return key


def get(name: str):
    """The sampler function registered under `name` (or a known alias)."""
    return SAMPLERS[resolve(name)]


__all__ = ["SAMPLERS", "ancestral_step", "available", "euler_step", "get", "resolve", "sample_ddim", "sample_ddpm",
           "sample_euler", "sample_euler_ancestral", "sample_heun"]
