"""The guidance scale as a network input (guided distillation: Luo et al. 2023, "Latent Consistency Models",
Sec. 4.2; Meng et al. 2023, Sec. 3): an LCM student reads w through the network's generic vector input, so one
call per step samples the guided model at w. Trained by `noisecraft.distill` (distill/guided.py); built by
`noisecraft.build` for a run whose `distill` section has guidance_input; fed by `noisecraft.pipelines.generate`.
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
