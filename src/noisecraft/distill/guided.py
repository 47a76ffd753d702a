"""Guided distillation (Luo et al. 2023, "Latent Consistency Models", Sec. 4.2; Meng et al. 2023, "On
Distillation of Guided Diffusion Models", Sec. 3): the student takes the guidance scale w as an input, so a
classifier-free-guided teacher at scale w becomes a few-step student at w with one network call per step.

- `noisecraft.models.guidance_input.GuidanceScaleInput` wraps the student's network: it reads
  cond["guidance_scale"] (B,) (absent: w = 1, the conditional model), embeds w sinusoidally (Vaswani et al. 2017,
  Sec. 3.5, the embedding LCM uses for w) and feeds the embedding through the network's generic global-vector
  input cond["vector"] (joined after the conditions' own vectors), which is added to the time embedding.
- `guided_teacher` is the teacher under classifier-free guidance with a per-sample scale: D_w = D_u + w (D_c -
  D_u) (Ho & Salimans 2022, Eq. 6 in x0 form; w = 1 the conditional model), the two sides in one batched call.
- `guidance_cond` (models.guidance_input) turns a request's guidance scale into the student's input.
"""

from __future__ import annotations

import torch
from torch import Tensor

from noisecraft.errors import NoisecraftError
from noisecraft.models.guidance_input import GUIDANCE_KEY, GuidanceScaleInput, guidance_cond, guidance_embedding

__all__ = ["GUIDANCE_KEY", "GuidanceScaleInput", "GuidedTeacher", "guidance_cond", "guidance_embedding",
           "guided_teacher"]

def guided_teacher(teacher, x: Tensor, sigma: Tensor, cond: dict, uncond: dict, w: Tensor) -> Tensor:
    """D_w = D_u + w (D_c - D_u) per sample (w (B,)), both sides in one call on [x; x] (Ho & Salimans 2022)."""
    from noisecraft.models.conditioning import concat_cond

    B = x.shape[0]
    both = teacher(torch.cat([x, x]), torch.cat([sigma, sigma]), concat_cond([cond, uncond], [B, B]))
    d_c, d_u = both[:B].to(x.dtype), both[B:].to(x.dtype)
    return d_u + w.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1))) * (d_c - d_u)


class GuidedTeacher:
    """The guided teacher as a denoiser(x, sigma, cond) for the ODE step of a whole batch: cond carries the
    student's cond["guidance_scale"] (B,), which picks each sample's w; `uncond` is the batch's unconditional
    side (B rows)."""

    def __init__(self, teacher, uncond: dict) -> None:
        self.teacher, self.uncond = teacher, uncond

    def __call__(self, x: Tensor, sigma, cond: dict | None = None) -> Tensor:
        from noisecraft.core.denoiser import expand_sigma

        cond = dict(cond)
        w = cond.pop(GUIDANCE_KEY)
        if next(iter(self.uncond.values())).shape[0] != x.shape[0]:
            raise NoisecraftError("guided teacher: the unconditional side must have the batch's size")
        return guided_teacher(self.teacher, x, expand_sigma(sigma, x), cond, self.uncond, w)
