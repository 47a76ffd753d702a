"""A Diffusion Transformer over spatio-temporal patches (Sora-style; Brooks et al. 2024, "Video generation models as
world simulators"; the patching of ViViT's tubelets, Arnab et al. 2021, sec. 3.2).

    x (B, C, T, H, W) --patchify (pt x p x p conv)--> tokens (B, N, h),  N = (T / pt) (H / p)^2
                      + position embedding: 1-D sin-cos of the token's time index + 2-D sin-cos of its grid cell
    the DiT blocks of `noisecraft.models.dit` (adaLN-Zero, cross-attention to text), attending over all N tokens
    final layer: Linear(h, pt p p C_out), unpatchify back to (B, C_out, T, H, W)

Conditioning is the DiT's (class labels, text tokens, pooled text, vectors); cond["concat"] (B, C_cat, T or 1, H, W)
is broadcast over time and patch-embedded by a bias-free conv added to the patch embedding of x. The position
embedding is built for the trained number of frames, so the model samples clips of exactly `frames` frames.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from noisecraft.errors import ConfigError, NoisecraftError, require
from noisecraft.models.conditioning import check_cond, refined_context
from noisecraft.models.dit import DiT, DiTConfig, sincos_pos_embed_2d


@dataclass(frozen=True)
class VideoDiTConfig(DiTConfig):
    """DiTConfig (input_size = the frame side, patch_size = p) and the clip length / temporal patch size."""

    frames: int = 8  # T of the clips; the position embedding is built for it
    temporal_patch: int = 2  # pt: frames per patch

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("frames", "temporal_patch"):
            v = getattr(self, name)
            require(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"VideoDiTConfig.{name}",
                    f"must be an integer >= 1, got {v!r}")
        require(self.frames % self.temporal_patch == 0, "VideoDiTConfig.temporal_patch",
                f"{self.temporal_patch} must divide frames {self.frames}")
        require(not self.out_conv, "VideoDiTConfig.out_conv", "the video DiT has no output convolution")
        require(not self.mlp_conv, "VideoDiTConfig.mlp_conv", "the video DiT has no 2-D Mix-FFN convolution")

    @property
    def num_tokens(self) -> int:
        return (self.frames // self.temporal_patch) * self.grid_size ** 2

    def for_data(self, shape: tuple[int, ...]) -> VideoDiTConfig:
        """in_channels, frames and input_size from a clip's shape (C, T, S, S)."""
        if len(shape) != 4 or shape[2] != shape[3]:
            raise ConfigError(f"the video DiT needs clips of square frames (C, T, S, S); the data has shape "
                              f"{tuple(shape)}")
        return dataclasses.replace(self, in_channels=shape[0], frames=shape[1], input_size=shape[2])

    def data_shape(self, side=None) -> tuple[int, ...]:
        return (self.in_channels, self.frames, self.input_size, self.input_size)


def sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """(N,) positions -> (N, dim) [sin(p w_i), cos(p w_i)], w_i = 10000^(-i / (dim / 2)) (Vaswani et al. 2017)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    out = positions.double()[:, None] * omega
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def spacetime_pos_embed(dim: int, frames: int, grid: int) -> Tensor:
    """(frames * grid^2, dim): the time index's 1-D sin-cos plus the grid cell's 2-D sin-cos (DiT's), tokens in
    (t, row, column) order."""
    space = sincos_pos_embed_2d(dim, grid)  # (g^2, dim)
    time = sincos_1d(dim, torch.arange(frames))  # (frames, dim)
    return (time[:, None, :] + space[None]).reshape(frames * grid * grid, dim)


class VideoDiT(DiT):
    """forward(x, c_noise, cond) with x (B, C, frames, S, S) -> (B, C_out, frames, S, S); exactly 0 at
    initialisation (adaLN-Zero), as the DiT."""

    def __init__(self, config: VideoDiTConfig) -> None:
        nn.Module.__init__(self)
        if not isinstance(config, VideoDiTConfig):
            raise ConfigError(f"VideoDiT expects a VideoDiTConfig, got {type(config).__name__}")
        self.config = cfg = config
        h, kernel = cfg.hidden_size, (cfg.temporal_patch, cfg.patch_size, cfg.patch_size)
        self.x_embedder = nn.Conv3d(cfg.in_channels, h, kernel, stride=kernel)
        self.concat_in = (nn.Conv3d(cfg.concat_channels, h, kernel, stride=kernel, bias=False)
                          if cfg.concat_channels else None)
        self._build_trunk(cfg, spacetime_pos_embed(h, cfg.frames // cfg.temporal_patch, cfg.grid_size).float()[None])
        self.final_layer.linear = nn.Linear(h, cfg.temporal_patch * cfg.patch_size ** 2 * cfg.output_channels)
        self.out_conv = None
        self._init_weights()

    def forward(self, x: Tensor, c_noise: Tensor, cond: dict | None = None) -> Tensor:
        c_noise = self._check_input(x, c_noise)
        B = x.shape[0]
        cond = dict(cond or {})
        if isinstance(cond.get("concat"), Tensor) and cond["concat"].ndim == 5 and cond["concat"].shape[2] == 1:
            cond["concat"] = cond["concat"].expand(-1, -1, x.shape[2], -1, -1)  # a first frame, for every frame
        cond = check_cond(cond, B, self.config.cond_spec, "VideoDiT", spatial=x.shape[2:])
        patches = self.x_embedder(x)  # (B, h, T / pt, S / p, S / p)
        if cond.get("concat") is not None:
            patches = patches + self.concat_in(cond["concat"].to(patches.dtype))
        tokens = patches.flatten(2).transpose(1, 2) + self.pos_embed  # (B, N, h)
        context, pooled = refined_context(self.refiner, cond)
        c = self._embed(c_noise, cond, B) + pooled  # (B, h)
        tokens = self._run_blocks(tokens, c, context)  # (B, N, h); with long_skip, U-ViT's skips as the DiT
        return self.unpatchify(self.final_layer(tokens, c))

    def unpatchify(self, x: Tensor) -> Tensor:
        """(B, N, pt p p C) -> (B, C, T, S, S): token (s, i, j) fills frames [s pt, (s+1) pt), pixels of cell (i, j)."""
        cfg = self.config
        n, g, p, pt, C = cfg.frames // cfg.temporal_patch, cfg.grid_size, cfg.patch_size, cfg.temporal_patch, \
            cfg.output_channels
        x = x.reshape(x.shape[0], n, g, g, pt, p, p, C)
        return torch.einsum("bshwtpqc->bcsthpwq", x).reshape(x.shape[0], C, n * pt, g * p, g * p)

    def _check_input(self, x: Tensor, c_noise: Tensor) -> Tensor:
        cfg = self.config
        expected = (cfg.in_channels, cfg.frames, cfg.input_size, cfg.input_size)
        if x.ndim != 5 or tuple(x.shape[1:]) != expected:
            raise NoisecraftError(f"VideoDiT input x: expected clips (B, {', '.join(map(str, expected))}) - the "
                                  f"model was trained on {cfg.frames} frames of {cfg.input_size}x{cfg.input_size} - "
                                  f"got {tuple(x.shape)}")
        c_noise = torch.as_tensor(c_noise, device=x.device)
        c_noise = c_noise.expand(x.shape[0]) if c_noise.ndim == 0 else c_noise
        if c_noise.shape != (x.shape[0],):
            raise NoisecraftError(f"VideoDiT c_noise: expected shape ({x.shape[0]},), got {tuple(c_noise.shape)}")
        return c_noise


__all__ = ["VideoDiT", "VideoDiTConfig", "spacetime_pos_embed"]
