"""Training noise schedules: which noise levels a model is trained on, and what it is told.

A schedule fixes, for the VE noise level sigma (x = x0 + sigma * n, see `core.conversions`):

- `sample_sigma(n, generator)`: the training distribution of sigma;
- `c_in(sigma)`: the input scaling, i.e. the process the network sees (VP, VE or flow);
- `c_noise(sigma)`: the network's noise conditioning ("timestep");
- `sigma_min`, `sigma_max`: the range a sampler may use.

Discrete beta schedules (Ho et al. 2020; Nichol & Dhariwal 2021; Xu et al. 2022) keep the table of
`alphas_cumprod`; their c_noise is the (fractional) timestep index found by interpolating log-sigma
in the table, so integer timesteps come back exactly. Continuous schedules follow Song et al. 2021
(VP, VE SDEs), Karras et al. 2022 (EDM, Table 1) and Esser et al. 2024 (rectified flow).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from noisecraft.core.conversions import sigma_from_alphas_cumprod
from noisecraft.errors import ConfigError, unknown_name

BETA_SCHEDULES = ("linear", "scaled_linear", "cosine", "sigmoid")
SCHEDULES = BETA_SCHEDULES + ("vp", "ve", "edm", "flow")


def make_betas(kind: str, num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Discrete betas (float64), same settings and formulas as diffusers' `beta_schedule` names.

    linear: Ho et al. 2020, Sec. 4 (1e-4 .. 0.02 over T = 1000).
    scaled_linear: linear in sqrt(beta) (Stable Diffusion; Rombach et al. 2022).
    cosine: Nichol & Dhariwal 2021, Eq. 17, s = 0.008, betas clipped at 0.999 (diffusers'
        "squaredcos_cap_v2").
    sigmoid: sigmoid(linspace(-6, 6)) scaled to [beta_start, beta_end] (Xu et al. 2022, GeoDiff).
    """
    if num_timesteps < 2:
        raise ConfigError(f"num_timesteps must be >= 2, got {num_timesteps}")
    T = num_timesteps
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    if kind == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2
    if kind == "cosine":
        def abar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [min(1 - abar((i + 1) / T) / abar(i / T), 0.999) for i in range(T)]
        return torch.tensor(betas, dtype=torch.float64)
    if kind == "sigmoid":
        s = torch.sigmoid(torch.linspace(-6, 6, T, dtype=torch.float64))
        return s * (beta_end - beta_start) + beta_start
    raise unknown_name("beta schedule", kind, BETA_SCHEDULES)


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation (numpy.interp) for increasing xp, clamped at the ends."""
    x = x.clamp(xp[0], xp[-1])
    idx = torch.searchsorted(xp, x).clamp(1, len(xp) - 1)
    x_lo, x_hi = xp[idx - 1], xp[idx]
    w = (x - x_lo) / (x_hi - x_lo)
    return fp[idx - 1] + w * (fp[idx] - fp[idx - 1])


class Schedule:
    """Base class. Subclasses set `name`, `sigma_min`, `sigma_max` and the methods below."""

    name: str
    sigma_min: float
    sigma_max: float

    def sample_sigma(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def c_in(self, sigma: torch.Tensor) -> torch.Tensor:
        """VP input scaling 1 / sqrt(1 + sigma^2) unless overridden."""
        return torch.rsqrt(1 + sigma**2)

    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _uniform(self, n, generator):
        return torch.rand(n, generator=generator, dtype=torch.float64)

    def _normal(self, n, generator):
        return torch.randn(n, generator=generator, dtype=torch.float64)


@dataclass(frozen=True, eq=False)
class DiscreteSchedule(Schedule):
    """A discrete VP schedule from its betas (Ho et al. 2020, Eq. 4): abar_t = prod_{s<=t} (1 - beta_s).

    sigmas[t] = sqrt((1 - abar_t) / abar_t) increases with t. Training draws t uniformly from
    {0, ..., T-1}; c_noise(sigma) is the fractional index t with sigma(t) = sigma (log-sigma interpolation).
    """

    name: str
    betas: torch.Tensor
    alphas_cumprod: torch.Tensor = field(init=False)
    sigmas: torch.Tensor = field(init=False)
    log_sigmas: torch.Tensor = field(init=False)

    def __post_init__(self):
        abar = torch.cumprod(1 - self.betas.to(torch.float64), dim=0)
        object.__setattr__(self, "alphas_cumprod", abar)
        object.__setattr__(self, "sigmas", sigma_from_alphas_cumprod(abar))
        object.__setattr__(self, "log_sigmas", self.sigmas.log())

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sample_sigma(self, n, generator=None):
        t = torch.randint(0, self.num_timesteps, (n,), generator=generator)
        return self.sigmas[t]

    def c_noise(self, sigma):
        return self.sigma_to_t(sigma)

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional timestep of a noise level (float64)."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        ts = torch.arange(self.num_timesteps, dtype=torch.float64)
        return _interp(sigma.log(), self.log_sigmas, ts)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Noise level of a fractional timestep (log-sigma interpolation; exact at integers)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        ts = torch.arange(self.num_timesteps, dtype=torch.float64)
        return _interp(t, ts, self.log_sigmas).exp()


@dataclass(frozen=True, eq=False)
class VPSchedule(Schedule):
    """Continuous VP SDE (Song et al. 2021, Eq. 11) with linear beta(t) = b_min + t (b_max - b_min).

    abar(t) = exp(-b_min t - (b_max - b_min) t^2 / 2), so sigma(t) = sqrt(exp(b_min t + (b_d/2) t^2) - 1).
    Training t ~ U(eps_t, 1); c_noise = (M - 1) t with M = 1000 (Karras et al. 2022, Table 1, VP).
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    eps_t: float = 1e-5
    name: str = "vp"

    def sigma(self, t):
        bd = self.beta_max - self.beta_min
        return torch.sqrt(torch.expm1(self.beta_min * t + 0.5 * bd * t**2))

    def t_of_sigma(self, sigma):
        bd = self.beta_max - self.beta_min
        return (torch.sqrt(self.beta_min**2 + 2 * bd * torch.log1p(sigma**2)) - self.beta_min) / bd

    @property
    def sigma_min(self):
        return float(self.sigma(torch.tensor(self.eps_t, dtype=torch.float64)))

    @property
    def sigma_max(self):
        return float(self.sigma(torch.tensor(1.0, dtype=torch.float64)))

    def sample_sigma(self, n, generator=None):
        return self.sigma(self.eps_t + (1 - self.eps_t) * self._uniform(n, generator))

    def c_noise(self, sigma):
        return 999 * self.t_of_sigma(sigma)


@dataclass(frozen=True, eq=False)
class VESchedule(Schedule):
    """Continuous VE SDE (Song et al. 2021, Eq. 9): sigma(t) = sigma_min (sigma_max / sigma_min)^t.

    Training t ~ U(0, 1) (sigma log-uniform); c_in = 1; c_noise = ln(sigma / 2) (Karras et al. 2022,
    Table 1, VE).
    """

    sigma_min: float = 0.02
    sigma_max: float = 100.0
    name: str = "ve"

    def sample_sigma(self, n, generator=None):
        lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
        return (lo + (hi - lo) * self._uniform(n, generator)).exp()

    def c_in(self, sigma):
        return torch.ones_like(sigma)

    def c_noise(self, sigma):
        return torch.log(0.5 * sigma)


@dataclass(frozen=True, eq=False)
class EDMSchedule(Schedule):
    """EDM (Karras et al. 2022, Table 1): ln sigma ~ N(P_mean, P_std^2) for training;
    c_in = 1 / sqrt(sigma^2 + sigma_data^2); c_noise = ln(sigma) / 4."""

    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    name: str = "edm"

    def sample_sigma(self, n, generator=None):
        return (self.p_mean + self.p_std * self._normal(n, generator)).exp()

    def c_in(self, sigma):
        return torch.rsqrt(sigma**2 + self.sigma_data**2)

    def c_noise(self, sigma):
        return 0.25 * sigma.log()


@dataclass(frozen=True, eq=False)
class FlowSchedule(Schedule):
    """Rectified flow (Liu et al. 2023; Lipman et al. 2023; Esser et al. 2024, SD3):
    x_t = (1 - t) x0 + t n, i.e. the VE view with sigma = t / (1 - t) and c_in = 1 - t = 1 / (1 + sigma).

    Training t ~ logit-normal(m, s) (Esser et al. 2024, Sec. 3.1); c_noise = 1000 t as in SD3.
    Sampling starts at t_max < 1 (sigma_max = t_max / (1 - t_max)) because sigma is infinite at t = 1.

    shift s: SD3's resolution-dependent timestep shift (Esser et al. 2024, Sec. 5.3.2, Eq. 23),
    t' = s t / (1 + (s - 1) t), applied to the training draw (then clamped to [t_min, t_max]) and to the
    "uniform" step schedule (uniform in the unshifted time between the same ends); s = sqrt(m / n) moves a
    schedule made for n pixels to m pixels (`resolution_shift`); s = 1 is the identity.
    """

    logit_mean: float = 0.0
    logit_std: float = 1.0
    t_min: float = 1e-3
    t_max: float = 0.999
    name: str = "flow"
    shift: float = 1.0

    def shift_t(self, t: torch.Tensor) -> torch.Tensor:
        """SD3 Eq. 23: t' = s t / (1 + (s - 1) t)."""
        return self.shift * t / (1 + (self.shift - 1) * t)

    def unshift_t(self, t: torch.Tensor) -> torch.Tensor:
        """The inverse of `shift_t`: t = t' / (s - (s - 1) t')."""
        return t / (self.shift - (self.shift - 1) * t)

    @property
    def sigma_min(self):
        return self.t_min / (1 - self.t_min)

    @property
    def sigma_max(self):
        return self.t_max / (1 - self.t_max)

    def sample_sigma(self, n, generator=None):
        t = self.shift_t(torch.sigmoid(self.logit_mean + self.logit_std * self._normal(n, generator)))
        t = t.clamp(self.t_min, self.t_max)
        return t / (1 - t)

    def c_in(self, sigma):
        return 1 / (1 + sigma)

    def c_noise(self, sigma):
        return 1000 * sigma / (1 + sigma)


def resolution_shift(pixels: int, base_pixels: int) -> float:
    """SD3's shift for m = `pixels` from a schedule made for n = `base_pixels` (Esser et al. 2024, Eq. 23):
    s = sqrt(m / n), e.g. 1024^2 vs 256^2 -> 4; the timestep t_n at n pixels becomes s t_n / (1 + (s - 1) t_n)."""
    if pixels <= 0 or base_pixels <= 0:
        raise ConfigError(f"resolution_shift: pixel counts must be > 0, got {pixels}, {base_pixels}")
    return math.sqrt(pixels / base_pixels)


def build_schedule(name: str, **options) -> Schedule:
    """Build a schedule by name (`SCHEDULES`). Options: num_timesteps, beta_start, beta_end for the
    discrete ones; the dataclass fields for the continuous ones."""
    if name in BETA_SCHEDULES:
        kw = {k: options[k] for k in ("num_timesteps", "beta_start", "beta_end") if k in options}
        kw.setdefault("num_timesteps", 1000)
        return DiscreteSchedule(name=name, betas=make_betas(name, **kw))
    classes = {"vp": VPSchedule, "ve": VESchedule, "edm": EDMSchedule, "flow": FlowSchedule}
    if name not in classes:
        raise unknown_name("schedule", name, SCHEDULES)
    return classes[name](**options)
