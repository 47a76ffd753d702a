"""A causal 3-D KL autoencoder for video (the causal video VAEs of MAGVIT-v2, Yu et al. 2024, sec. 3.1, and
CogVideoX, Yang et al. 2024, sec. 2.1): the first frame is coded alone, later frames in causal groups.

Every convolution is causal in time: a 3x3x3 kernel sees frames t-2, t-1, t (the clip's first frame repeated
before it), never t+1. Normalisation is per frame (GroupNorm over (C/G, H, W) of each frame), so nothing mixes
frames other than the causal convolutions. Each of the first `time_levels` downsampling stages halves time as well
as space with a causal stride-2 convolution: output frame j reads input frames 2j-2, 2j-1, 2j, so a clip of
1 + 2k frames becomes 1 + k; frame 0 of the latent is a function of input frame 0 alone. The decoder mirrors it:
each temporal upsampling turns latent frame 0 into one frame and every later one into two (nearest repeat, the
first copy of frame 0 dropped), followed by causal convolutions.

With f_t = 2^time_levels (4 by default) a clip of T = 1 + f_t k frames (H x W) becomes 1 + k latent frames of
H/f x W/f: latent frame j depends only on input frames <= f_t j, and decoded frames f_t (j-1) + 1 .. f_t j (the
j-th group) only on latent frames <= j. So output frame t never depends on input frames after the end of its own
group (after frame 0 for t = 0): the causality the tests check exactly by perturbation.

`tiled_decode_time` decodes a long latent clip `tile` latent frames at a time, each tile preceded by the decoder's
temporal receptive field of context (`decoder_context`) whose outputs are discarded: exactly the full decoding.
The posterior is `noisecraft.models.autoencoder.DiagonalGaussian` (KL to N(0, I)). The interface matches the image
`Autoencoder` (encode / decode / to_diffusion / from_diffusion / factor / scaling_factor), so latent datasets
and sampling use it unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from noisecraft.errors import ConfigError, NoisecraftError, require
from noisecraft.models.autoencoder import DiagonalGaussian

KERNEL_T = 3  # temporal kernel of every causal convolution


@dataclass(frozen=True)
class CausalVAEConfig:
    in_channels: int = 1                             # channels of the frames
    latent_channels: int = 4                         # c: channels of the latent
    block_channels: tuple[int, ...] = (16, 32, 64)   # width per level; len - 1 downsamplings (f = 2^(len - 1))
    time_levels: int = 2                             # the first this many downsamplings also halve time (f_t)
    layers_per_block: int = 1                        # residual blocks per level
    norm_groups: int = 8                             # GroupNorm groups (divide every width)

    def __post_init__(self) -> None:
        for name in ("in_channels", "latent_channels", "layers_per_block", "norm_groups"):
            v = getattr(self, name)
            require(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"causal_vae.{name}",
                    f"must be an integer >= 1, got {v!r}")
        require(isinstance(self.block_channels, tuple) and len(self.block_channels) >= 2, "causal_vae.block_channels",
                f"needs >= 2 levels, got {self.block_channels!r}")
        require(all(c % self.norm_groups == 0 for c in self.block_channels), "causal_vae.norm_groups",
                f"{self.norm_groups} must divide every width {self.block_channels}")
        require(0 <= self.time_levels <= len(self.block_channels) - 1, "causal_vae.time_levels",
                f"must be in 0..{len(self.block_channels) - 1}, got {self.time_levels}")

    @property
    def factor(self) -> int:
        return 2 ** (len(self.block_channels) - 1)

    @property
    def time_factor(self) -> int:
        return 2 ** self.time_levels


def latent_frames(frames: int, time_factor: int) -> int:
    """1 + k latent frames for a clip of 1 + f_t k frames; NoisecraftError for other lengths."""
    if frames < 1 or (frames - 1) % time_factor:
        ok = ", ".join(str(1 + time_factor * k) for k in range(4))
        raise NoisecraftError(f"the causal video autoencoder codes clips of 1 + {time_factor} k frames ({ok}, ...); "
                              f"got {frames} frames")
    return 1 + (frames - 1) // time_factor


class CausalConv3d(nn.Module):
    """A 3-D convolution causal in time: the input is padded with KERNEL_T - 1 copies of its first frame in front
    (and zeros around in space), so output frame t reads input frames <= t (<= stride t for a temporal stride)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: tuple[int, int, int] = (1, 1, 1)) -> None:
        super().__init__()
        self.pad_t = KERNEL_T - 1 if kernel > 1 else 0
        k = (KERNEL_T, kernel, kernel) if kernel > 1 else (1, 1, 1)
        self.conv = nn.Conv3d(c_in, c_out, k, stride=stride, padding=(0, kernel // 2, kernel // 2))

    def forward(self, x: Tensor) -> Tensor:
        if self.pad_t:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.pad_t, -1, -1), x], dim=2)  # (B, C, T + 2, H, W)
        return self.conv(x)


def frame_norm(x: Tensor, norm: nn.GroupNorm) -> Tensor:
    """GroupNorm of each frame separately: (B, C, T, H, W) normalised over (C / G, H, W) per (b, t)."""
    B, C, T, H, W = x.shape
    frames = x.transpose(1, 2).reshape(B * T, C, H, W)
    out = F.group_norm(frames, norm.num_groups, norm.weight, norm.bias, norm.eps)
    return out.reshape(B, T, C, H, W).transpose(1, 2)


class CausalResBlock(nn.Module):
    """GN-SiLU-causal conv twice, plus a 1x1x1 shortcut when the width changes."""

    def __init__(self, c_in: int, c_out: int, groups: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, c_in), CausalConv3d(c_in, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(groups, c_out), CausalConv3d(c_out, c_out)
        self.skip = nn.Conv3d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(frame_norm(x, self.norm1)))
        h = self.conv2(F.silu(frame_norm(h, self.norm2)))
        return (x if self.skip is None else self.skip(x)) + h


class TimeUpsample(nn.Module):
    """Nearest 2x in space, and in time when `time`: frame 0 -> 1 frame (at the clip's start), others -> 2."""

    def __init__(self, channels: int, time: bool) -> None:
        super().__init__()
        self.time = time
        self.conv = CausalConv3d(channels, channels)

    def forward(self, x: Tensor, first: bool = True) -> Tensor:
        if self.time:
            x = x.repeat_interleave(2, dim=2)
            x = x[:, :, 1:] if first else x  # (B, C, 2T - 1 or 2T, H, W)
        x = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")
        return self.conv(x)


class CausalEncoder(nn.Module):
    def __init__(self, cfg: CausalVAEConfig) -> None:
        super().__init__()
        ch, g = cfg.block_channels, cfg.norm_groups
        self.conv_in = CausalConv3d(cfg.in_channels, ch[0])
        layers: list[nn.Module] = []
        for level, width in enumerate(ch):
            c_in = ch[max(level - 1, 0)]
            layers += [CausalResBlock(c_in if i == 0 else width, width, g) for i in range(cfg.layers_per_block)]
            if level < len(ch) - 1:
                layers.append(CausalConv3d(width, width, stride=(2 if level < cfg.time_levels else 1, 2, 2)))
        self.down = nn.Sequential(*layers)
        self.mid = CausalResBlock(ch[-1], ch[-1], g)
        self.norm_out = nn.GroupNorm(g, ch[-1])
        self.conv_out = CausalConv3d(ch[-1], 2 * cfg.latent_channels)

    def forward(self, x: Tensor) -> Tensor:
        h = self.mid(self.down(self.conv_in(x)))
        return self.conv_out(F.silu(frame_norm(h, self.norm_out)))  # (B, 2c, T', H / f, W / f)


class CausalDecoder(nn.Module):
    def __init__(self, cfg: CausalVAEConfig) -> None:
        super().__init__()
        ch, g = cfg.block_channels, cfg.norm_groups
        self.conv_in = CausalConv3d(cfg.latent_channels, ch[-1])
        self.mid = CausalResBlock(ch[-1], ch[-1], g)
        self.blocks = nn.ModuleList()
        levels = len(ch)
        for level in reversed(range(levels)):
            c_in = ch[min(level + 1, levels - 1)]
            res = [CausalResBlock(c_in if i == 0 else ch[level], ch[level], g) for i in range(cfg.layers_per_block)]
            up = [TimeUpsample(ch[level], time=level - 1 < cfg.time_levels)] if level > 0 else []
            self.blocks.append(nn.ModuleList(res + up))
        self.norm_out = nn.GroupNorm(g, ch[0])
        self.conv_out = CausalConv3d(ch[0], cfg.in_channels)

    def forward(self, z: Tensor, first: bool = True) -> Tensor:
        h = self.mid(self.conv_in(z))
        for block in self.blocks:
            for layer in block:
                h = layer(h, first) if isinstance(layer, TimeUpsample) else layer(h)
        return self.conv_out(F.silu(frame_norm(h, self.norm_out)))


class CausalVideoVAE(nn.Module):
    """encode (B, C, 1 + f_t k, H, W) -> posterior mean (B, c, 1 + k, H / f, W / f); decode the inverse."""

    def __init__(self, config: CausalVAEConfig, *, scaling_factor: float = 1.0, shift_factor: float = 0.0) -> None:
        super().__init__()
        if not isinstance(config, CausalVAEConfig):
            raise ConfigError(f"CausalVideoVAE expects a CausalVAEConfig, got {type(config).__name__}")
        self.config = config
        self.encoder, self.decoder = CausalEncoder(config), CausalDecoder(config)
        self.scaling_factor, self.shift_factor = float(scaling_factor), float(shift_factor)

    @property
    def factor(self) -> int:
        return self.config.factor

    @property
    def time_factor(self) -> int:
        return self.config.time_factor

    def _check(self, x: Tensor, channels: int, what: str, f: int = 1) -> None:
        if x.ndim != 5 or x.shape[1] != channels or x.shape[-1] % f or x.shape[-2] % f:
            raise NoisecraftError(f"causal video autoencoder {what}: expected (B, {channels}, T, H, W)"
                                  + (f" with H, W divisible by {f}" if f > 1 else "") + f", got {tuple(x.shape)}")

    def posterior(self, x: Tensor) -> DiagonalGaussian:
        self._check(x, self.config.in_channels, "input", self.factor)
        latent_frames(x.shape[2], self.time_factor)
        return DiagonalGaussian(self.encoder(x))

    def encode(self, x: Tensor) -> Tensor:
        return self.posterior(x).mean

    def decode(self, z: Tensor, first: bool = True) -> Tensor:
        """Latents (B, c, T', h, w) -> frames; `first`: z starts at the clip's first latent frame."""
        self._check(z, self.config.latent_channels, "latent")
        return self.decoder(z, first)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, DiagonalGaussian]:
        q = self.posterior(x)
        return self.decode(q.sample(generator)), q

    def to_diffusion(self, z: Tensor) -> Tensor:
        return (z - self.shift_factor) * self.scaling_factor

    def from_diffusion(self, z: Tensor) -> Tensor:
        return z / self.scaling_factor + self.shift_factor

    def decoder_context(self) -> int:
        """Latent frames of history any decoded frame can see (the decoder's temporal receptive field): each causal
        conv reaches KERNEL_T - 1 frames back at its stage's frame rate, rate 2^u after u temporal upsamplings."""
        reach, rate = 0.0, 1
        for m in self.decoder.modules():
            if isinstance(m, TimeUpsample) and m.time:
                rate *= 2
            if isinstance(m, CausalConv3d) and m.pad_t:
                reach += m.pad_t / rate
        return math.ceil(reach) + 1

    def tiled_decode_time(self, z: Tensor, tile: int = 2, context: int | None = None) -> Tensor:
        """decode(z) computed `tile` latent frames at a time, each with `context` (default decoder_context())
        latent frames before it decoded and discarded: equal to decode(z) when context covers the receptive field."""
        context = self.decoder_context() if context is None else context
        ft, out = self.time_factor, []
        for start in range(0, z.shape[2], tile):
            lo = max(0, start - context)
            x = self.decode(z[:, :, lo:start + tile], first=lo == 0)
            skip = (start - lo) * ft - (ft - 1 if lo == 0 and start > 0 else 0)  # frames made from the context
            out.append(x[:, :, skip:])
        return torch.cat(out, dim=2)

    def tiled_decode(self, z: Tensor, tile: int = 64, overlap: int = 16) -> Tensor:
        """The image autoencoder's spatial tiling interface (used by latent sampling for big latents): decoded tiled
        in time instead; frames of this autoencoder are small."""
        return self.tiled_decode_time(z)


__all__ = ["CausalConv3d", "CausalVAEConfig", "CausalVideoVAE", "latent_frames"]
