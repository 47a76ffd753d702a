"""The few-step objectives as pure functions over the denoiser interface (VE view, x = x0 + sigma z).

Notation (Song et al. 2023, "Consistency Models"): f_theta(x, sigma) the consistency function (a `Denoiser`
whose `Prediction` has `boundary_sigma` = eps, so f(x, eps) = x exactly); f_theta^- the target network (an EMA
of theta, or theta itself under stop-gradient); sigma_1 = eps < ... < sigma_N = sigma_max the discretisation;
d(., .) the distance; lambda(sigma) the weighting; Phi one step of the teacher's probability-flow ODE solver.

| function                | paper                                                                    |
|-------------------------|--------------------------------------------------------------------------|
| function                | what                                                 | paper                           |
|-------------------------|------------------------------------------------------|---------------------------------|
| `karras_levels`         | the N-level discretisation                           | Song et al. 2023, Sec. 5        |
| `teacher_step`          | x_hat_n = Phi(x_{n+1}, sigma_{n+1} -> sigma_n)       | Song et al. 2023, Eq. 6         |
| `distance`              | l2; pseudo-Huber sqrt(norm^2 + c^2) - c; features    | Song & Dhariwal 2024, Sec. 3.3  |
| `consistency_pair_loss` | lambda d(f_theta(x_{n+1}), f_theta^-(x_hat_n))       | Song et al. 2023, Eq. 7, Eq. 10 |
| `ict_num_scales`        | the iCT curriculum N(k)                              | Song & Dhariwal 2024, Eq. 7     |
| `ict_level_probs`       | the discretised lognormal p(sigma_i)                 | Song & Dhariwal 2024, Sec. 3.5  |
| `ict_weight`            | lambda(sigma_i) = 1 / (sigma_{i+1} - sigma_i)        | Song & Dhariwal 2024, Sec. 3.2  |
| `ect_r`                 | r(t) = t (1 - q^-(stage+1) (1 + k sigmoid(-b t)))    | Geng et al. 2024, Sec. 3.2      |
| `reflow_loss`           | norm(D(x0 + sigma z) - x0)^2 on coupled (z, x0) pairs | Liu et al. 2023, Eq. 1         |
| `one_step_loss`         | norm(f(sigma_max z) - x0)^2, the one-step map        | Liu et al. 2023, Sec. 2.3       |
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from noisecraft.errors import NoisecraftError

# Samplers whose result is a random function of x: not an ODE solver step.
STOCHASTIC_SAMPLERS = ("ddpm", "euler_a", "dpmpp_2s_a", "dpmpp_2m_sde", "dpmpp_3m_sde", "euler_maruyama", "pc")


def bcast(v: Tensor, x: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) in x's dtype, to broadcast against x."""
    return v.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


def karras_levels(eps: float, sigma_max: float, N: int, rho: float = 7.0) -> Tensor:
    """sigma_i = (eps^(1/rho) + (i - 1) / (N - 1) (sigma_max^(1/rho) - eps^(1/rho)))^rho, i = 1..N, increasing
    (float64, (N,)); sigma_1 = eps and sigma_N = sigma_max exactly (Song et al. 2023, Sec. 5)."""
    if N < 2 or not 0 < eps < sigma_max:
        raise NoisecraftError(f"need N >= 2 and 0 < eps < sigma_max, got N={N}, eps={eps}, sigma_max={sigma_max}")
    ramp = torch.linspace(0, 1, N, dtype=torch.float64)
    lo, hi = eps ** (1 / rho), sigma_max ** (1 / rho)
    levels = (lo + ramp * (hi - lo)) ** rho
    levels[0], levels[-1] = eps, sigma_max
    return levels


# ----------------------------------------------------------------------------------------- teacher step
def deterministic_solver(name: str) -> str:
    """The registered name of a deterministic sampler (an ODE solver) or a NoisecraftError naming the allowed."""
    from noisecraft import samplers

    allowed = [s for s in samplers.available() if s not in STOCHASTIC_SAMPLERS and s != "consistency"]
    key = samplers.resolve(name)
    if key not in allowed:
        raise NoisecraftError(f"the teacher's ODE step needs a deterministic sampler; {name!r} is not one; "
                              f"allowed: {', '.join(allowed)}")
    return key


class _Reached(Exception):
    """Raised by the callback that stops a sampler once it has reached sigma_next."""

    def __init__(self, x):
        self.x = x


def teacher_step(teacher, x: Tensor, sigma: Tensor, sigma_next: Tensor, cond=None, solver: str = "heun") -> Tensor:
    """Phi(x, sigma -> sigma_next): one step of the teacher's probability-flow ODE with a registered deterministic
    sampler (Song et al. 2023, Eq. 6 with Phi the solver); sigma, sigma_next (B,) float64, sigma_next > 0.

    Euler / DDIM (identical at eta = 0 in the VE view: x + (sigma_next - sigma) (x - D) / sigma) and Heun
    (Karras et al. 2022, Alg. 1, lines 5-8) run per sample in one batched call (1 and 2 NFE). Every other
    deterministic sampler runs on [sigma, sigma_next, 0] per group of equal levels: its stateless step where it
    has one (1 NFE), else the whole sampler stopped when it reaches sigma_next (one extra evaluation)."""
    solver = deterministic_solver(solver)
    s, s_next = bcast(sigma, x), bcast(sigma_next, x)
    if solver in ("euler", "ddim"):
        return x + (s_next - s) * (x - teacher(x, sigma, cond).to(x.dtype)) / s
    if solver == "heun":
        d = (x - teacher(x, sigma, cond).to(x.dtype)) / s
        x_euler = x + (s_next - s) * d
        d_next = (x_euler - teacher(x_euler, sigma_next, cond).to(x.dtype)) / s_next
        return x + (s_next - s) * 0.5 * (d + d_next)
    return _grouped_step(teacher, x, sigma, sigma_next, cond, solver)


def _grouped_step(teacher, x, sigma, sigma_next, cond, solver):
    from noisecraft import samplers
    from noisecraft.models.conditioning import slice_cond

    out = torch.empty_like(x)
    pairs = torch.stack([sigma, sigma_next], 1)
    for pair in torch.unique(pairs, dim=0):
        idx = (pairs == pair).all(1).nonzero().flatten()
        s, s_next = float(pair[0]), float(pair[1])
        xs, cs = x[idx], slice_cond(cond, idx)
        if solver in samplers.STEPS:
            out[idx] = samplers.get_step(solver)(xs, s, s_next, teacher(xs, pair[0], cs).to(x.dtype), None)[0]
            continue

        def stop(info):
            if info["i"] == 1:
                raise _Reached(info["x"])

        try:
            samplers.get(solver)(teacher, xs, torch.tensor([s, s_next, 0.0], dtype=torch.float64), cond=cs,
                                 callback=stop)
        except _Reached as reached:
            out[idx] = reached.x.to(x.dtype)
        else:
            raise NoisecraftError(f"sampler {solver!r} did not report its second step; it cannot be a teacher step")
    return out


# -------------------------------------------------------------------------------------------- distances
def pseudo_huber_c(x: Tensor) -> float:
    """c = 0.00054 sqrt(d) for data of dimension d (Song & Dhariwal 2024, Sec. 3.3)."""
    return 0.00054 * math.sqrt(x[0].numel())


def distance(a: Tensor, b: Tensor, kind: str = "l2", *, c: float | None = None, features=None) -> Tensor:
    """Per-sample d(a, b) (B,): "l2" the mean squared difference; "pseudo_huber" sqrt(||a - b||^2 + c^2) - c
    (Song & Dhariwal 2024, Eq. 8; c None: `pseudo_huber_c`); "feature" the mean squared difference of
    features(a) and features(b) (a differentiable image-feature network, the LPIPS role of Song et al. 2023)."""
    if kind == "l2":
        return (a - b).square().flatten(1).mean(1)
    if kind == "pseudo_huber":
        c = pseudo_huber_c(a) if c is None else c
        return torch.sqrt((a - b).square().flatten(1).sum(1) + c**2) - c
    if kind == "feature":
        if features is None:
            raise NoisecraftError("distance 'feature' needs a feature network (features=)")
        return (features(a) - features(b)).square().flatten(1).mean(1)
    raise NoisecraftError(f"unknown distance {kind!r}; allowed: l2, pseudo_huber, feature")


def image_features(name: str, device="cpu"):
    """A differentiable feature map of [-1, 1] images through noisecraft's feature network `name` (eval.features),
    frozen; images are resized and converted as `eval.features.to_network_input` does."""
    from noisecraft.eval.features import get_extractor, to_network_input

    ext = get_extractor(name, device=str(device))
    net = ext.net.requires_grad_(False).eval()

    def features(x: Tensor) -> Tensor:
        batch = to_network_input(x.float().clamp(-1, 1), size=ext.size, channels=ext.channels,
                                 antialias=ext.antialias)
        return net(ext.scale(batch))[0]

    return features


# ------------------------------------------------------------------------------------------ consistency
def consistency_pair_loss(student, target, x_hi: Tensor, sigma_hi: Tensor, x_lo: Tensor, sigma_lo: Tensor,
                          cond=None, *, weight: Tensor | None = None, kind: str = "l2", c: float | None = None,
                          features=None) -> Tensor:
    """lambda(sigma_lo) d(f_theta(x_hi, sigma_hi), f_theta^-(x_lo, sigma_lo)) per sample (B,) (Song et al. 2023,
    Eq. 7 (CD: x_lo = Phi(x_hi)) and Eq. 10 (CT: x_lo = x0 + sigma_lo z)); the target side without gradient."""
    f_hi = student(x_hi, sigma_hi, cond).float()
    with torch.no_grad():
        f_lo = target(x_lo, sigma_lo, cond).float()
    d = distance(f_hi, f_lo, kind, c=c, features=features)
    return d if weight is None else weight.to(d.dtype) * d


def ict_num_scales(step: int, total_steps: int, s0: int = 10, s1: int = 1280) -> int:
    """N(k) = min(s0 2^floor(k / K'), s1) + 1 with K' = floor(K / (log2 floor(s1 / s0) + 1)) (Song & Dhariwal
    2024, Eq. 7): the number of discretisation levels at training step k of K."""
    K_prime = max(1, math.floor(total_steps / (math.log2(s1 // s0) + 1)))
    return min(s0 * 2 ** (step // K_prime), s1) + 1


def ict_level_probs(levels: Tensor, p_mean: float = -1.1, p_std: float = 2.0) -> Tensor:
    """p(sigma_i) proportional to erf((ln sigma_{i+1} - P_mean) / (sqrt 2 P_std)) - erf((ln sigma_i - P_mean) /
    (sqrt 2 P_std)) for i = 1..N-1 (Song & Dhariwal 2024, Sec. 3.5): the lognormal discretised on the levels."""
    z = (levels.log() - p_mean) / (math.sqrt(2) * p_std)
    p = torch.erf(z[1:]) - torch.erf(z[:-1])
    return p / p.sum()


def ict_weight(sigma_lo: Tensor, sigma_hi: Tensor) -> Tensor:
    """lambda(sigma_i) = 1 / (sigma_{i+1} - sigma_i) (Song & Dhariwal 2024, Sec. 3.2)."""
    return 1.0 / (sigma_hi - sigma_lo)


def ect_stage(step: int, total_steps: int, stages: int) -> int:
    """The ECT stage at a step: total_steps split into `stages` equal parts (Geng et al. 2024, Sec. 3.2: the
    gap t - r halves, for q = 2, from stage to stage)."""
    return min(stages - 1, step * stages // max(1, total_steps))


def ect_r(t: Tensor, stage: int, *, q: float = 2.0, k: float = 8.0, b: float = 1.0) -> Tensor:
    """r(t) = t (1 - q^-(stage + 1) n(t)), n(t) = 1 + k sigmoid(-b t), clamped at 0 (Geng et al. 2024, Sec. 3.2,
    the sigmoid mapping function): r -> t as the stages advance, faster for small t."""
    n = 1 + k * torch.sigmoid(-b * t)
    return (t * (1 - q ** -(stage + 1) * n)).clamp(min=0)


# ------------------------------------------------------------------------------------------------ reflow
def reflow_loss(denoiser, x0: Tensor, z: Tensor, sigma: Tensor, cond=None, *, weighting: str = "simple",
                gamma: float = 5.0) -> Tensor:
    """The rectified-flow loss on coupled pairs (z, x0 = ODE_teacher(sigma_max z)) (Liu et al. 2023, Eq. 1): in
    the VE view the straight path X_t = t z + (1 - t) x0 is x = x0 + sigma z with sigma = t / (1 - t), so the
    loss is the run's own denoising loss with its noise replaced by the coupled z (B,)."""
    from noisecraft.core.losses import denoising_loss

    return denoising_loss(denoiser, x0, sigma, z, cond, weighting=weighting, gamma=gamma)


def one_step_loss(student, x0: Tensor, z: Tensor, sigma_max: float, cond=None) -> Tensor:
    """||D(sigma_max z, sigma_max) - x0||^2 per sample (B,): the one-step map z -> x0 distilled from the
    (reflowed) pairs (Liu et al. 2023, Sec. 2.3, distillation); D(x_T, sigma_max) is what one Euler step or one
    consistency step from sigma_max returns."""
    sigma = torch.full((x0.shape[0],), float(sigma_max), dtype=torch.float64, device=x0.device)
    return (student(sigma_max * z, sigma, cond).float() - x0.float()).square().flatten(1).mean(1)
