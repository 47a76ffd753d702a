"""Classifier-free guidance and autoguidance as denoiser wrappers.

Every wrapper here is itself a denoiser, `guided(x, sigma, cond=None) -> x0_hat`, so every sampler in
`noisecraft.samplers` runs it unchanged. Notation (VE view, x = x0 + sigma n): D_c = D(x, sigma, cond) the
conditional x0 estimate, D_u = D(x, sigma, uncond) the unconditional one, w the guidance scale.

- Classifier-free guidance (Ho & Salimans 2022, eq. 6): eps~ = (1 + w') eps_c - w' eps_u. With w = 1 + w'
  and D = x - sigma eps this is, in x0 form, D_w = D_u + w (D_c - D_u): w = 1 is the conditional model,
  w = 0 the unconditional one. The combination is linear, so it is the same in eps and x0 space.
  A negative prompt replaces uncond by the negative prompt's condition.
- Guidance interval (Kynkaanniemi et al. 2024, sec. 3): guide only for sigma in [lo, hi]; outside, D_c.
- Guidance rescale (Lin et al. 2024, sec. 3.4, eqs. 15-16): with std over each sample's elements,
  x_rescaled = x_cfg std(x_pos) / std(x_cfg), x_final = phi x_rescaled + (1 - phi) x_cfg. Applied here to
  the x0 estimates (space="x0", the default: x_pos = D_c, x_cfg = D_w) or to the noise estimates
  eps = (x - D) / sigma (space="eps"), and mapped back to D = x - sigma eps_final. diffusers applies it to
  the raw network output (eps or v), which equals space="eps" for eps-prediction models.
- Autoguidance (Karras et al. 2024, eq. 1 and sec. 3): D_w = D_bad + w (D_good - D_bad), where the bad
  model is a smaller or less-trained model of the same task and condition.

Cost: the conditional and unconditional evaluations share ONE batched network call per step (the batch
[x; x] with the conditions concatenated, token sequences padded to a common length with mask False);
w = 1 needs only the conditional call, w = 0 only the unconditional one (inside the interval); samples
outside the interval are evaluated only conditionally, in the same call.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from noisecraft.core.denoiser import expand_sigma
from noisecraft.errors import NoisecraftError
from noisecraft.models.conditioning import COND_KEYS, CondSpec, concat_cond, expand_cond, slice_cond

RESCALE_SPACES = ("x0", "eps")


def cond_spec_of(denoiser) -> CondSpec | None:
    """The conditioning a denoiser accepts, when it says so: `denoiser.cond_spec`, or that of the config of
    `denoiser.net` / `denoiser` (U-Net, DiT: `config.cond_spec`; other configs: their `num_classes` etc.).
    None when unknown (a plain function)."""
    for obj in (denoiser, getattr(denoiser, "net", None)):
        config = getattr(obj, "config", None)
        spec = getattr(obj, "cond_spec", None) or getattr(config, "cond_spec", None)
        if isinstance(spec, CondSpec):
            return spec
        if isinstance(getattr(config, "num_classes", None), int):
            return CondSpec(*(getattr(config, f, 0) for f in ("num_classes", "context_dim", "pooled_dim",
                                                                "vector_dim")))
    return None


def require_conditional(denoiser, what: str) -> CondSpec | None:
    """Raise NoisecraftError when the denoiser is known to take no condition at all."""
    spec = cond_spec_of(denoiser)
    if spec is not None and not spec.accepts():
        raise NoisecraftError(f"{what} needs a conditional model, but this model takes no condition "
                              f"(num_classes, context_dim, pooled_dim and vector_dim are all 0)")
    return spec


def null_class_cond(num_classes: int, batch: int = 1, device=None) -> dict:
    """{"class_labels": the null label num_classes}, the unconditional condition of a class-conditional model."""
    return {"class_labels": torch.full((batch,), num_classes, dtype=torch.long, device=device)}


def check_scale(scale, what: str = "guidance scale") -> float:
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
        raise NoisecraftError(f"{what} must be a finite number, got {scale!r}")
    return float(scale)


def check_interval(interval) -> tuple[float, float] | None:
    """None (guide at every sigma) or (lo, hi) with 0 <= lo <= hi."""
    if interval is None:
        return None
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise NoisecraftError(f"guidance interval must be a pair (lo, hi) of noise levels, got {interval!r}") from None
    if not (0 <= lo <= hi) or math.isnan(hi):
        raise NoisecraftError(f"guidance interval must satisfy 0 <= lo <= hi, got ({lo}, {hi})")
    return lo, hi


def in_interval(sigma: Tensor, interval: tuple[float, float] | None) -> Tensor:
    """(B,) bool: which noise levels lie in the closed interval [lo, hi] (all, for None)."""
    if interval is None:
        return torch.ones_like(sigma, dtype=torch.bool)
    return (sigma >= interval[0]) & (sigma <= interval[1])


def _per_sample_std(v: Tensor) -> Tensor:
    """Standard deviation over all but the batch axis, shaped (B, 1, ..., 1)."""
    return v.flatten(1).std(dim=1, correction=0).reshape(-1, *([1] * (v.ndim - 1)))  # (B, 1, ..., 1)


def rescale_guidance(d_cfg: Tensor, d_cond: Tensor, phi: float, *, x: Tensor | None = None,
                     sigma: Tensor | None = None, space: str = "x0") -> Tensor:
    """Guidance rescale of Lin et al. 2024 (sec. 3.4, eqs. 15-16) on guided / conditional x0 estimates.

    space="x0": rescale D_w itself; space="eps": rescale eps = (x - D) / sigma and return x - sigma eps_final
    (needs x and sigma > 0). phi = 0 returns d_cfg unchanged."""
    if phi == 0:
        return d_cfg
    if space == "x0":
        pos, cfg = d_cond, d_cfg
    elif space == "eps":
        s = sigma.to(d_cfg.dtype).reshape(-1, *([1] * (d_cfg.ndim - 1)))
        pos, cfg = (x - d_cond) / s, (x - d_cfg) / s
    else:
        raise NoisecraftError(f"rescale space must be one of {', '.join(RESCALE_SPACES)}; got {space!r}")
    ratio = _per_sample_std(pos) / _per_sample_std(cfg).clamp_min(torch.finfo(cfg.dtype).tiny)
    final = phi * cfg * ratio + (1 - phi) * cfg
    return final if space == "x0" else x - s * final


class ClassifierFreeGuidance:
    """Classifier-free guidance (Ho & Salimans 2022) as a denoiser: guided(x, sigma, cond) -> x0_hat.

    denoiser:  the conditional denoiser D(x, sigma, cond) (trained with condition dropout)
    scale:     guidance scale w in D_u + w (D_c - D_u); 1 = conditional, 0 = unconditional
    uncond:    the unconditional condition (batch 1 or B): for text, the encoding of the empty prompt "";
               a negative prompt's condition for negative prompting. None: the null class label for
               "class_labels" (from the model's num_classes); other keys then need an explicit uncond.
               Keys of cond missing from uncond: class_labels -> null label; text_mask -> all True.
    interval:  (lo, hi): guide only for sigma in [lo, hi] (Kynkaanniemi et al. 2024); else D_c. None: always
    rescale:   phi of guidance rescale (Lin et al. 2024); 0 = off
    rescale_space: "x0" (default) or "eps", where the rescale is applied (module docstring)
    """

    def __init__(self, denoiser, scale: float, *, uncond: dict | None = None, interval=None, rescale: float = 0.0,
                 rescale_space: str = "x0") -> None:
        self.spec = require_conditional(denoiser, "classifier-free guidance")
        self.denoiser = denoiser
        self.scale = check_scale(scale)
        self.uncond = uncond
        self.interval = check_interval(interval)
        self.rescale = check_scale(rescale, "guidance rescale phi")
        if not 0 <= self.rescale <= 1:
            raise NoisecraftError(f"guidance rescale phi must be in [0, 1], got {rescale}")
        if rescale_space not in RESCALE_SPACES:
            raise NoisecraftError(f"rescale space must be one of {', '.join(RESCALE_SPACES)}; got {rescale_space!r}")
        self.rescale_space = rescale_space

    def unconditional(self, cond: dict, batch: int, device) -> dict:
        """The unconditional (or negative) condition for a batch of `batch`, with the keys of `cond`."""
        uncond = dict(expand_cond(self.uncond, batch) or {})
        for key in cond:
            if key in uncond or key == "text_mask":
                continue
            if key == "class_labels" and self.spec is not None and self.spec.num_classes:
                uncond[key] = torch.full((batch,), self.spec.num_classes, dtype=torch.long, device=device)
            else:
                raise NoisecraftError(f"classifier-free guidance: cond has {key!r} but uncond does not; pass "
                                      f"uncond= (for text: the encoding of the empty prompt \"\")")
        return uncond

    def __call__(self, x: Tensor, sigma, cond: dict | None = None) -> Tensor:
        if not cond:
            raise NoisecraftError(f"classifier-free guidance needs a condition; cond must be a dict with keys "
                                  f"among {', '.join(COND_KEYS)}, got {cond!r}")
        B = x.shape[0]
        sigma = expand_sigma(sigma, x)
        cond = expand_cond(cond, B)
        guided = in_interval(sigma, self.interval)  # (B,)
        if self.scale == 1 or not guided.any():
            return self.denoiser(x, sigma, cond)
        uncond = self.unconditional(cond, B, x.device)
        if self.scale == 0:  # unconditional inside the interval, conditional outside: one call
            return _call_mixed(self.denoiser, x, sigma, cond, uncond, guided)
        idx = guided.nonzero().flatten()
        out = self.denoiser(torch.cat([x, x[idx]]), torch.cat([sigma, sigma[idx]]),
                            concat_cond([cond, slice_cond(uncond, idx)], [B, len(idx)]))
        d_cond, d_uncond = out[:B], out[B:]
        d = d_uncond + self.scale * (d_cond[idx] - d_uncond)  # Ho & Salimans 2022, eq. 6 in x0 form
        d = rescale_guidance(d, d_cond[idx], self.rescale, x=x[idx], sigma=sigma[idx], space=self.rescale_space)
        result = d_cond.clone()
        result[idx] = d.to(result.dtype)
        return result


def _call_mixed(denoiser, x: Tensor, sigma: Tensor, cond: dict, uncond: dict, use_uncond: Tensor) -> Tensor:
    """One call: sample i with uncond where use_uncond[i], else with cond."""
    if use_uncond.all():
        return denoiser(x, sigma, uncond)
    a, b = (~use_uncond).nonzero().flatten(), use_uncond.nonzero().flatten()
    order = torch.cat([a, b])
    out = denoiser(x[order], sigma[order], concat_cond([slice_cond(cond, a), slice_cond(uncond, b)], [len(a), len(b)]))
    result = torch.empty_like(out)
    result[order] = out
    return result


class AutoGuidance:
    """Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself", eq. 1):
    D_w = D_bad + w (D_good - D_bad), both evaluated with the same condition.

    good, bad: denoisers of the same task (bad = a smaller and/or less-trained model); scale: w (1 = good);
    interval: (lo, hi) to guide only there (else D_good), None = always."""

    def __init__(self, good, bad, scale: float, *, interval=None) -> None:
        self.good, self.bad = good, bad
        self.scale = check_scale(scale)
        self.interval = check_interval(interval)

    def __call__(self, x: Tensor, sigma, cond: dict | None = None) -> Tensor:
        sigma = expand_sigma(sigma, x)
        guided = in_interval(sigma, self.interval)
        if self.scale == 1 or not guided.any():
            return self.good(x, sigma, cond)
        idx = guided.nonzero().flatten()
        sub = cond if bool(guided.all()) else slice_cond(expand_cond(cond, x.shape[0]), idx)
        d_bad = self.bad(x[idx], sigma[idx], sub)
        if self.scale == 0 and bool(guided.all()):
            return d_bad
        d_good = self.good(x, sigma, cond)
        result = d_good.clone()
        result[idx] = (d_bad + self.scale * (d_good[idx] - d_bad)).to(result.dtype)
        return result
