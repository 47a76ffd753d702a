"""Guided distillation (Luo et al. 2023, "Latent Consistency Models", Sec. 4.2; Meng et al. 2023, "On
Distillation of Guided Diffusion Models", Sec. 3): the student takes the guidance scale w as an input, so a
classifier-free-guided teacher at scale w becomes a few-step student at w with one network call per step.

- `GuidanceScaleInput` wraps the student's network: it reads cond["guidance_scale"] (B,) (absent: w = 1, the
  conditional model), embeds w sinusoidally (Vaswani et al. 2017, Sec. 3.5, the embedding LCM uses for w) and
  feeds the embedding through the network's generic global-vector input cond["vector"] (joined after the
  conditions' own vectors), which is added to the time embedding.
- `guided_teacher` is the teacher under classifier-free guidance with a per-sample scale: D_w = D_u + w (D_c -
  D_u) (Ho & Salimans 2022, Eq. 6 in x0 form; w = 1 the conditional model), the two sides in one batched call.
- `guidance_cond` turns a request's guidance scale into the student's input.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from noisecraft.errors import NoisecraftError

GUIDANCE_KEY = "guidance_scale"
W_SCALE = 100.0  # w enters the embedding as 100 w, so the frequencies resolve steps of 0.01 in w


def guidance_embedding(w: Tensor, dim: int) -> Tensor:
    """[cos(100 w omega_k), sin(100 w omega_k)] with omega_k = 10000^(-k / (dim / 2)), (B, dim) float32."""
    half = dim // 2
    omega = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=w.device) / half)
    arg = W_SCALE * w.float()[:, None] * omega[None]
    emb = torch.cat([torch.cos(arg), torch.sin(arg)], dim=1)
    return emb if dim % 2 == 0 else torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)


class GuidanceScaleInput(nn.Module):
    """The network of an LCM student: net(x, c_noise, cond) with cond["guidance_scale"] (B,) or (1,) read and
    embedded into cond["vector"]. Attributes it does not have (config, cond_spec, ...) are the network's."""

    def __init__(self, net: nn.Module, width: int) -> None:
        super().__init__()
        self.net = net
        self.width = width

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("net"), name)

    def forward(self, x: Tensor, c_noise: Tensor, cond: dict | None = None) -> Tensor:
        cond = dict(cond or {})
        B = x.shape[0]
        w = cond.pop(GUIDANCE_KEY, None)
        w = torch.ones(B, device=x.device) if w is None else torch.as_tensor(w, device=x.device).reshape(-1)
        if w.shape[0] not in (1, B):
            raise NoisecraftError(f"cond[{GUIDANCE_KEY!r}]: expected shape ({B},) or (1,), got {tuple(w.shape)}")
        emb = guidance_embedding(w.expand(B), self.width)  # (B, width)
        vector = cond.get("vector")
        cond["vector"] = emb if vector is None else torch.cat([vector.to(emb.dtype), emb], dim=1)
        return self.net(x, c_noise, cond)


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


def guidance_cond(cond: dict | None, request) -> dict:
    """The LCM student's cond for a request: the conditions' cond with cond["guidance_scale"] = the request's w
    (1 when it asks for none). Guidance intervals and rescaling are refused: the student learnt w alone."""
    if request.guidance_interval is not None or request.guidance_rescale != 0:
        raise NoisecraftError("this student takes the guidance scale as an input (an LCM student): --guidance-interval "
                              "and --guidance-rescale do not apply; give --guidance W alone")
    w = 1.0 if request.guidance is None else float(request.guidance)
    if not math.isfinite(w) or w < 0:
        raise NoisecraftError(f"guidance scale must be a finite number >= 0, got {request.guidance!r}")
    return {**(cond or {}), GUIDANCE_KEY: torch.tensor([w], dtype=torch.float32)}
