"""A video U-Net with factorised space-time blocks (Ho et al. 2022, "Video Diffusion Models", sec. 3).

The spatial layers are exactly those of the image `UNet` (`self.image`), applied to every frame: the frames are
folded into the batch, (B, C, T, H, W) -> (B T, C, H, W). After every residual stage (each down block, the middle
block, each up block) come the temporal layers, which mix information across frames at each pixel:

    h <- h + W_c * SiLU(GN(h))                              a 1-D convolution over time (kernel k, zero padding)
    h <- h + W_o Attn(LN(h); relative position bias over t)  temporal attention (at temporal_attention_levels),
                                                            every frame attending to every
                                                            frame at the same pixel (VDM's "temporal attention"
                                                            with relative position embeddings, sec. 3)

W_c and W_o start at zero, so at initialisation every temporal layer is the identity and the network is the image
U-Net applied frame by frame - exactly, which is what AnimateDiff (Guo et al. 2024, sec. 4.2) builds on: a
trained image U-Net is inflated into a video model (`inflate`), its layers frozen, and only the temporal modules
are trained. Conditioning is the image U-Net's, per video: class labels, text tokens, pooled text and vectors are
repeated for every frame, and cond["concat"] (B, C_cat, T or 1, H, W) is broadcast over time (a first frame,
SVD-style, is given once).

Shapes: B videos, C channels, T frames (any number: the temporal layers have no absolute positions; their
relative position bias is clipped at `max_distance`), H x W frames.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from noisecraft.errors import ConfigError, NoisecraftError, require
from noisecraft.models.conditioning import check_cond, refined_context
from noisecraft.models.unet import _GN_EPS, ConcatSkip, UNet, UNetConfig, group_norm_silu

PER_VIDEO = ("class_labels", "text_tokens", "text_mask", "text_pooled", "vector")  # repeated for every frame


@dataclass(frozen=True)
class VideoUNetConfig(UNetConfig):
    """The image U-Net's fields (UNetConfig, with dims = 2: the spatial layers of one frame) and the temporal
    layers'."""

    frames: int = 8  # T of the training clips (the network takes any T; this is the data's)
    temporal_kernel: int = 3  # kernel of the 1-D temporal convolutions (odd)
    temporal_attention_levels: tuple[int, ...] | None = None  # levels with temporal attention (None: every level)
    max_distance: int = 8  # relative positions |i - j| beyond this share one bias
    freeze_image: bool = False  # train only the temporal layers (AnimateDiff); the image layers keep their weights
    inflate_from: str | None = None  # an image U-Net run whose weights the image layers start from (`inflate`)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.dims == 2, "VideoUNetConfig.dims", f"the spatial layers are 2-D (one frame); got dims={self.dims}")
        for name in ("frames", "temporal_kernel", "max_distance"):
            v = getattr(self, name)
            require(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"VideoUNetConfig.{name}",
                    f"must be an integer >= 1, got {v!r}")
        require(self.temporal_kernel % 2 == 1, "VideoUNetConfig.temporal_kernel",
                f"must be odd, got {self.temporal_kernel}")
        require(self.temporal_attention_levels is None or all(
            isinstance(v, int) and 0 <= v < len(self.channel_mult) for v in self.temporal_attention_levels),
            "VideoUNetConfig.temporal_attention_levels",
            f"levels must be in 0..{len(self.channel_mult) - 1} or None (every level), got "
            f"{self.temporal_attention_levels!r}")
        require(self.inflate_from is None or isinstance(self.inflate_from, str), "VideoUNetConfig.inflate_from",
                f"expected a run directory or None, got {self.inflate_from!r}")

    def temporal_attention_at(self, level: int) -> bool:
        return self.temporal_attention_levels is None or level in self.temporal_attention_levels

    def image_config(self) -> UNetConfig:
        """The image U-Net of one frame (this config's UNetConfig fields)."""
        return UNetConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(UNetConfig)})

    def for_data(self, shape: tuple[int, ...]) -> VideoUNetConfig:
        """in_channels and frames from a clip's shape (C, T, H, W)."""
        if len(shape) != 4:
            raise ConfigError(f"the video U-Net needs clips (C, T, H, W); the data samples have shape {tuple(shape)}")
        return dataclasses.replace(self, in_channels=shape[0], frames=shape[1])

    def data_shape(self, side) -> tuple[int, ...]:
        return (self.in_channels, self.frames, side(), side())


def fold_frames(x: Tensor) -> Tensor:
    """(B, C, T, H, W) -> (B T, C, H, W): frame t of video b is row b T + t."""
    B, C, T, H, W = x.shape
    return x.transpose(1, 2).reshape(B * T, C, H, W)


def unfold_frames(x: Tensor, T: int) -> Tensor:
    """(B T, C, H, W) -> (B, C, T, H, W), the inverse of fold_frames."""
    BT, C, H, W = x.shape
    return x.reshape(BT // T, T, C, H, W).transpose(1, 2).contiguous()


def fold_cond(cond: dict | None, T: int) -> dict | None:
    """A video's cond -> every frame's: per-video entries repeated T times, concat (B, C, T or 1, H, W) folded."""
    if cond is None:
        return None
    out = {}
    for key, v in cond.items():
        if key == "concat" and isinstance(v, Tensor) and v.ndim == 5:
            out[key] = fold_frames(v.expand(-1, -1, T, -1, -1) if v.shape[2] == 1 else v)
        elif key in PER_VIDEO and isinstance(v, Tensor):
            out[key] = v.repeat_interleave(T, dim=0)
        else:
            out[key] = v
    return out


def relative_bias(table: nn.Embedding, T: int, max_distance: int) -> Tensor:
    """(heads, T, T) bias b[h, i, j] = table[clip(j - i, -M, M) + M, h] (Shaw et al. 2018; VDM sec. 3)."""
    pos = torch.arange(T, device=table.weight.device)
    rel = (pos[None, :] - pos[:, None]).clamp(-max_distance, max_distance) + max_distance  # (T, T)
    return table(rel).permute(2, 0, 1)


class TemporalLayers(nn.Module):
    """The temporal layers after one residual stage (module docstring): a 1-D convolution over time, then
    temporal attention (at `temporal_attention_levels`); both residual, both zero-initialised."""

    def __init__(self, channels: int, cfg: VideoUNetConfig, attention: bool = True) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(cfg.norm_groups, channels, eps=_GN_EPS)
        self.conv = nn.Conv1d(channels, channels, cfg.temporal_kernel, padding=cfg.temporal_kernel // 2)
        self.heads = channels // cfg.head_channels if channels % cfg.head_channels == 0 else 1
        self.max_distance = cfg.max_distance
        if attention:
            self.attn_norm = nn.LayerNorm(channels)
            self.qkv = nn.Linear(channels, 3 * channels)
            self.proj = nn.Linear(channels, channels)
            self.bias = nn.Embedding(2 * cfg.max_distance + 1, self.heads)
            nn.init.zeros_(self.bias.weight)
        else:
            self.qkv = None
        for m in (self.conv, self.proj if self.qkv is not None else None):
            if m is not None:
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, h: Tensor, T: int) -> Tensor:
        """h: (B T, C, H, W) frames -> the same shape and memory format."""
        BT, C, H, W = h.shape
        seq = h.reshape(BT // T, T, C, H * W).permute(0, 3, 2, 1).reshape(-1, C, T)  # (B H W, C, T)
        seq = seq + self.conv(group_norm_silu(seq, self.norm))
        if self.qkv is not None:
            tokens = seq.transpose(1, 2)  # (B H W, T, C)
            d = C // self.heads
            q, k, v = self.qkv(self.attn_norm(tokens)).view(-1, T, 3, self.heads, d).permute(2, 0, 3, 1, 4)
            bias = relative_bias(self.bias, T, self.max_distance).to(q.dtype)  # (heads, T, T)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B H W, heads, T, d)
            seq = seq + self.proj(out.transpose(1, 2).reshape(-1, T, C)).transpose(1, 2)
        out = seq.reshape(BT // T, H, W, C, T).permute(0, 4, 3, 1, 2).reshape(BT, C, H, W)
        return out.contiguous(memory_format=torch.channels_last if h.is_contiguous(
            memory_format=torch.channels_last) else torch.contiguous_format)


class NoTemporal(nn.Module):
    """No temporal layer (after a stage without residual blocks: a downsampling)."""

    def forward(self, h: Tensor, T: int) -> Tensor:
        return h


class VideoUNet(nn.Module):
    """forward(x, c_noise, cond): x (B, C, T, H, W), c_noise (B,), cond per video (module docstring) ->
    (B, C_out, T, H, W). `self.image` is an ordinary `UNet` (its state dict loads an image run's weights)."""

    def __init__(self, config: VideoUNetConfig) -> None:
        super().__init__()
        if not isinstance(config, VideoUNetConfig):
            raise ConfigError(f"VideoUNet expects a VideoUNetConfig, got {type(config).__name__}")
        self.config = cfg = config
        self.image = UNet(cfg.image_config())
        down = []
        for level, width in enumerate(cfg.widths):
            down += [TemporalLayers(width, cfg, cfg.temporal_attention_at(level)) for _ in range(cfg.num_res_blocks)]
            down += [NoTemporal()] if level < len(cfg.widths) - 1 else []
        self.temporal_down = nn.ModuleList(down)
        self.temporal_mid = TemporalLayers(cfg.widths[-1], cfg, cfg.temporal_attention_at(len(cfg.widths) - 1))
        self.temporal_up = nn.ModuleList(TemporalLayers(width, cfg, cfg.temporal_attention_at(level))
                                         for level, width in reversed(list(enumerate(cfg.widths)))
                                         for _ in range(cfg.num_res_blocks + 1))
        if cfg.freeze_image:
            self.image.requires_grad_(False)

    def forward(self, x: Tensor, c_noise: Tensor, cond: dict | None = None) -> Tensor:
        c_noise = self._check_input(x, c_noise)
        T, img = x.shape[2], self.image
        frames = fold_frames(x)  # (B T, C, H, W)
        fcond = check_cond(fold_cond(cond, T), frames.shape[0], img.config.cond_spec, "VideoUNet",
                           spatial=frames.shape[2:])
        context, pooled = refined_context(img.refiner, fcond)
        emb_act = F.silu(img._embed(c_noise.repeat_interleave(T), fcond, frames.shape[0]) + pooled)  # (B T, E)
        h = img.conv_in(frames.contiguous(memory_format=img.memory_format))  # (B T, C_0, H, W)
        if fcond.get("concat") is not None:
            h = h + img.concat_in(fcond["concat"].to(x.dtype).contiguous(memory_format=img.memory_format))
        skips = [h]
        for block, temporal in zip(img.down, self.temporal_down):
            h = temporal(block(h, emb_act, context), T)
            skips.append(h)
        h = self.temporal_mid(img.mid(h, emb_act, context), T)
        for block, temporal in zip(img.up, self.temporal_up):
            h = temporal(block(ConcatSkip.apply(h, skips.pop(), img.memory_format), emb_act, context), T)
        out = img.conv_out(group_norm_silu(h, img.norm_out)).contiguous()  # (B T, C_out, H, W)
        return unfold_frames(out, T)

    def _check_input(self, x: Tensor, c_noise: Tensor) -> Tensor:
        cfg, factor = self.config, 2 ** (len(self.config.channel_mult) - 1)
        if x.ndim != 5 or x.shape[1] != cfg.in_channels or x.shape[-1] % factor or x.shape[-2] % factor:
            raise NoisecraftError(f"VideoUNet input x: expected clips (B, {cfg.in_channels}, T, H, W) with H and W "
                                  f"divisible by {factor}, got {tuple(x.shape)}")
        c_noise = torch.as_tensor(c_noise, device=x.device)
        c_noise = c_noise.expand(x.shape[0]) if c_noise.ndim == 0 else c_noise
        if c_noise.shape != (x.shape[0],):
            raise NoisecraftError(f"VideoUNet c_noise: expected shape ({x.shape[0]},), got {tuple(c_noise.shape)}")
        return c_noise


def inflate(video: VideoUNet, image_state: dict, *, freeze: bool = True) -> VideoUNet:
    """AnimateDiff-style inflation (Guo et al. 2024, sec. 4.2): the image layers take a trained image U-Net's
    weights (strict: the architectures must match) and, with `freeze`, stop training; the temporal layers keep
    their zero initialisation, so the inflated model starts as the image model applied frame by frame."""
    try:
        video.image.load_state_dict(image_state, strict=True)
    except RuntimeError as e:
        raise ConfigError(f"inflate: the image run's U-Net does not match the video U-Net's image layers (give the "
                          f"video preset the image run's network fields): {e}") from None
    if freeze:
        video.image.requires_grad_(False)
    return video


__all__ = ["TemporalLayers", "VideoUNet", "VideoUNetConfig", "fold_cond", "fold_frames", "inflate",
           "unfold_frames"]
