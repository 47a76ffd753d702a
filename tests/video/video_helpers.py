"""Tiny video networks and clips shared by tests/video (imported as `video_helpers`)."""

from __future__ import annotations

import torch

from noisecraft.models.causal_vae import CausalVAEConfig, CausalVideoVAE
from noisecraft.models.video_unet import VideoUNet, VideoUNetConfig


def tiny_video_unet(**changes) -> VideoUNet:
    cfg = dict(in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(1,),
               head_channels=8, norm_groups=4, frames=4)
    torch.manual_seed(0)
    return VideoUNet(VideoUNetConfig(**{**cfg, **changes}))


def randomise(module: torch.nn.Module, std: float = 0.1, seed: int = 1) -> torch.nn.Module:
    """Every parameter of `module` drawn from N(0, std^2) (so that zero-initialised layers are not zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def tiny_vae(seed: int = 0) -> CausalVideoVAE:
    torch.manual_seed(seed)
    return CausalVideoVAE(CausalVAEConfig(block_channels=(8, 8, 8), latent_channels=2, norm_groups=4)).eval()


def clips(n: int = 2, c: int = 1, t: int = 4, side: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, t, side, side, generator=torch.Generator().manual_seed(seed))
