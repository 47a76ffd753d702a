"""U-Net denoiser backbone for 1-D, 2-D and 3-D data.

The architecture follows Ho et al. 2020, "Denoising Diffusion Probabilistic Models" (appendix B),
with the improvements of Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis"
(ADM, section 3): several residual blocks per resolution, multi-head self-attention at chosen
resolutions, adaptive group normalisation (scale-shift by the timestep embedding) and
zero-initialised output layers.

Conditioning (the contract in `noisecraft.models.conditioning`): class labels (with a null label),
`text_pooled` and `vector` are added into the time embedding; with `context_dim > 0` every attention
place (attention levels and the middle block) is followed by a `CrossAttentionBlock` - self-attention,
then cross-attention to the text tokens, then a feed-forward layer, as in the transformer blocks of
Rombach et al. 2022 (LDM, sec. 3.3). With `refiner.kernel > 0` the tokens first pass a small trainable
n-gram block (`conditioning.TokenRefiner`) shared by every cross-attention. `cond["concat"]` (channels
concatenated to x: `concat_channels` of them) enters the first convolution, as SR3 (Saharia et al. 2022) and
LDM's concat conditioning feed their inputs: conv([x, c]) = conv_in(x) + concat_in(c). An unconditional config
builds exactly the network it built before.

Notation (shapes):

    B      batch size
    C      channels at the current level
    *S     the `dims` spatial sizes, e.g. (H, W) for images; L = prod(S) tokens for attention
    E      time-embedding width (`time_embed_mult * base_channels`)

Speed without changing the function (see benchmarks/README.md for the measurements):

- `channels_last=True` (the default) keeps 2-D/3-D activations in channels-last memory format.
  It changes only how tensors are stored, not the numbers computed; the convolutions get faster
  (measured in benchmarks/train_speed.md) and the token view used by attention is free. 1-D data has
  no such format and ignores the flag.
- `Upsample` runs nearest 2x upsampling + 3x3 conv as one stride-2 transposed convolution with
  the equivalent 4x4 weight (16 instead of 36 multiply-adds per input pixel in 2-D).
- `ConcatSkip` hands densely stored gradients to the skip connections; plain `torch.cat`
  returns strided channel slices in channels-last layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from noisecraft.errors import ConfigError, NoisecraftError, require
from noisecraft.models.conditioning import (
    CondEmbedding,
    CondSpec,
    CrossAttention,
    TokenRefinerConfig,
    build_refiner,
    check_cond,
    context_width,
    null_labels,
    refined_context,
)

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_MEMORY_FORMAT = {1: torch.contiguous_format, 2: torch.channels_last, 3: torch.channels_last_3d}
_GN_EPS = 1e-5  # GroupNorm epsilon, as in ADM and diffusers


def _memory_format(cfg: UNetConfig) -> torch.memory_format:
    return _MEMORY_FORMAT[cfg.dims] if cfg.channels_last else torch.contiguous_format


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)



@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of `UNet`; every field is validated in `__post_init__`."""

    in_channels: int = 1  # channels of the input x (1 for MNIST, 3 for RGB, latent channels, ...)
    out_channels: int | None = None  # channels of the output; None -> same as in_channels
    dims: int = 2  # number of spatial dimensions: 1 (sequences), 2 (images) or 3 (volumes, video)
    base_channels: int = 32  # width of level 0; level i has base_channels * channel_mult[i]
    channel_mult: tuple[int, ...] = (1, 2, 2)  # width multiplier per level; len = number of levels
    num_res_blocks: int = 2  # residual blocks per level on the way down (one more on the way up)
    attention_levels: tuple[int, ...] = (2,)  # level indices (0 = full resolution) with self-attention
    head_channels: int = 32  # channels per attention head (heads = level width // head_channels)
    dropout: float = 0.0  # dropout probability inside residual blocks, in [0, 1)
    norm_groups: int = 8  # GroupNorm groups; must divide every level width
    scale_shift_norm: bool = True  # True: adaGN, h = GN(h)(1 + s) + b (ADM); False: h + emb before GN
    num_classes: int = 0  # >0: class embedding added to the time embedding; label num_classes = "null"
    mid_attention: bool = True  # self-attention in the middle block (between its two res blocks)
    time_embed_mult: int = 4  # time-embedding width E = time_embed_mult * base_channels
    channels_last: bool = True  # keep 2-D/3-D activations channels-last (faster; same numbers)
    context_dim: int = 0  # >0: width D_ctx of cond["text_tokens"]; cross-attention at every attention place
    pooled_dim: int = 0  # >0: width of cond["text_pooled"], added to the time embedding through a Linear
    vector_dim: int = 0  # >0: width of cond["vector"], added to the time embedding through a Linear
    concat_channels: int = 0  # >0: channels of cond["concat"], concatenated to x before the first conv
    refiner: TokenRefinerConfig = field(default_factory=TokenRefinerConfig)  # n-gram block over the text tokens

    def __post_init__(self) -> None:
        self._check_types()
        self._check_values()
        self._check_widths()

    def _check_types(self) -> None:
        for name in ("in_channels", "dims", "base_channels", "num_res_blocks", "head_channels", "norm_groups",
                     "num_classes", "time_embed_mult", "context_dim", "pooled_dim", "vector_dim", "concat_channels"):
            value = getattr(self, name)
            require(_is_int(value), f"UNetConfig.{name}", f"expected an integer, got {value!r}")
        require(self.out_channels is None or _is_int(self.out_channels), "UNetConfig.out_channels",
                f"expected an integer or None, got {self.out_channels!r}")
        for name in ("channel_mult", "attention_levels"):
            value = getattr(self, name)
            require(isinstance(value, tuple) and all(_is_int(v) for v in value), f"UNetConfig.{name}",
                    f"expected a tuple of integers, got {value!r}")
        require(isinstance(self.dropout, int | float) and not isinstance(self.dropout, bool), "UNetConfig.dropout",
                f"expected a number, got {self.dropout!r}")
        for name in ("scale_shift_norm", "mid_attention", "channels_last"):
            require(isinstance(getattr(self, name), bool), f"UNetConfig.{name}",
                    f"expected true or false, got {getattr(self, name)!r}")
        require(isinstance(self.refiner, TokenRefinerConfig), "UNetConfig.refiner",
                f"expected a TokenRefinerConfig, got {type(self.refiner).__name__}")

    def _check_values(self) -> None:
        require(self.dims in (1, 2, 3), "UNetConfig.dims", f"must be one of 1, 2, 3; got {self.dims}")
        for name in ("in_channels", "base_channels", "num_res_blocks", "head_channels", "norm_groups",
                     "time_embed_mult"):
            require(getattr(self, name) >= 1, f"UNetConfig.{name}", f"must be >= 1, got {getattr(self, name)}")
        require(self.out_channels is None or self.out_channels >= 1, "UNetConfig.out_channels",
                f"must be >= 1 or None, got {self.out_channels}")
        require(len(self.channel_mult) >= 1 and min(self.channel_mult) >= 1, "UNetConfig.channel_mult",
                f"must be a non-empty tuple of integers >= 1, got {self.channel_mult}")
        levels = len(self.channel_mult)
        require(all(0 <= lv < levels for lv in self.attention_levels), "UNetConfig.attention_levels",
                f"levels must be in 0..{levels - 1} (one per channel_mult entry), got {self.attention_levels}")
        require(len(set(self.attention_levels)) == len(self.attention_levels), "UNetConfig.attention_levels",
                f"must not repeat a level, got {self.attention_levels}")
        require(0.0 <= self.dropout < 1.0, "UNetConfig.dropout", f"must be in [0, 1), got {self.dropout}")
        require(self.num_classes >= 0, "UNetConfig.num_classes",
                f"must be >= 0 (0 = unconditional), got {self.num_classes}")
        for name in ("context_dim", "pooled_dim", "vector_dim", "concat_channels"):
            require(getattr(self, name) >= 0, f"UNetConfig.{name}",
                    f"must be >= 0 (0 = off), got {getattr(self, name)}")
        require(self.context_dim == 0 or self.attention_levels or self.mid_attention, "UNetConfig.context_dim",
                "cross-attention needs an attention place: set attention_levels or mid_attention = true")

    def _check_widths(self) -> None:
        for level, width in enumerate(self.widths):
            require(width % self.norm_groups == 0, "UNetConfig.norm_groups",
                    f"{self.norm_groups} must divide every level width base_channels * channel_mult = "
                    f"{self.widths}; level {level} has {width} channels")
            needs_heads = level in self.attention_levels or (self.mid_attention and level == len(self.widths) - 1)
            require(not needs_heads or width % self.head_channels == 0, "UNetConfig.head_channels",
                    f"{self.head_channels} must divide the width (base_channels * channel_mult) of every "
                    f"attention level; level {level} has {width} channels")

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels of each level."""
        return tuple(self.base_channels * m for m in self.channel_mult)

    @property
    def output_channels(self) -> int:
        return self.in_channels if self.out_channels is None else self.out_channels

    @property
    def cond_spec(self) -> CondSpec:
        return CondSpec(self.num_classes, self.context_dim, self.pooled_dim, self.vector_dim, self.concat_channels)

    def for_data(self, shape: tuple[int, ...]) -> UNetConfig:
        """This config with in_channels from a data sample's shape (C, *S), which must have `dims` axes S."""
        if len(shape) != self.dims + 1:
            raise ConfigError(f"UNetConfig.dims: the U-Net has dims = {self.dims} but the data samples have shape "
                              f"{tuple(shape)}; expected (C, " + ", ".join(["S"] * self.dims) + ")")
        return replace(self, in_channels=shape[0])

    def data_shape(self, side) -> tuple[int, ...]:
        """(in_channels, side(), ..., side()): the U-Net takes any size, so `side()` gives the data's."""
        return (self.in_channels, *[side()] * self.dims)


UNET_PRESETS: dict[str, UNetConfig] = {
    # ~48k parameters: unit tests and smoke runs.
    "tiny": UNetConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(1,),
                       head_channels=8, norm_groups=4),
    # ~1.7M parameters: 28x28 grey images, trains on a CPU in minutes; attention at 7x7.
    "mnist": UNetConfig(base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=2, attention_levels=(2,),
                        head_channels=32, norm_groups=8),
    # ~23M parameters: 64x64 RGB, attention at 16x16 and 8x8 (a reduced ADM ImageNet-64).
    "small": UNetConfig(in_channels=3, base_channels=64, channel_mult=(1, 2, 3, 4), num_res_blocks=2,
                        attention_levels=(2, 3), head_channels=64, norm_groups=32, dropout=0.1),
    # ~123M parameters: 64x64 RGB, attention at 32x32, 16x16 and 8x8 (ADM ImageNet-64 layout).
    "base": UNetConfig(in_channels=3, base_channels=128, channel_mult=(1, 2, 3, 4), num_res_blocks=3,
                       attention_levels=(1, 2, 3), head_channels=64, norm_groups=32, dropout=0.1),
}


def timestep_embedding(c_noise: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of a real-valued noise condition (Vaswani et al. 2017, section 3.5;
    Ho et al. 2020, appendix B): [cos(c f_0), ..., cos(c f_{h-1}), sin(c f_0), ..., sin(c f_{h-1})]
    with f_i = max_period^(-i / h), h = dim // 2 (zero-padded to `dim` when it is odd)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) / half * torch.arange(half, dtype=torch.float32,
                                                                  device=c_noise.device))
    args = c_noise.float()[:, None] * freqs[None]  # (B, h)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)  # (B, 2h)
    return F.pad(emb, (0, dim % 2))  # (B, dim)


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(Q K^T / sqrt(d)) V. Under bfloat16 autocast on a CPU the product runs in float32 (and the result is
    cast back): PyTorch's CPU bfloat16 attention backward is several times slower than its float32 one at these
    sizes (benchmarks/train_speed.md), and float32 attention is the more accurate choice anyway."""
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v)


def group_norm_silu(x: Tensor, norm: nn.GroupNorm) -> Tensor:
    return F.silu(F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps))


def _broadcast(v: Tensor, dims: int) -> Tensor:
    """(B, C) -> (B, C, 1, ..., 1) with `dims` trailing singleton axes."""
    return v.view(*v.shape, *([1] * dims))


class ResBlock(nn.Module):
    """Residual block (Ho et al. 2020, app. B; Dhariwal & Nichol 2021, sec. 3 "adaptive group
    normalisation"): h = conv(SiLU(GN(x))); h = GN(h)(1 + s) + b (or GN(h + e)); h = conv(drop(SiLU(h)));
    out = skip(x) + h, with (s, b) or e a linear map of SiLU(emb) and skip a 1x1 conv when C changes."""

    def __init__(self, in_ch: int, out_ch: int, emb_ch: int, cfg: UNetConfig) -> None:
        super().__init__()
        conv = CONV[cfg.dims]
        self.dims = cfg.dims
        self.scale_shift = cfg.scale_shift_norm
        self.dropout = cfg.dropout
        self.norm1 = nn.GroupNorm(cfg.norm_groups, in_ch, eps=_GN_EPS)
        self.conv1 = conv(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_ch, 2 * out_ch if cfg.scale_shift_norm else out_ch)
        self.norm2 = nn.GroupNorm(cfg.norm_groups, out_ch, eps=_GN_EPS)
        self.conv2 = conv(out_ch, out_ch, 3, padding=1)
        self.skip = conv(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: Tensor, emb_act: Tensor) -> Tensor:
        """x: (B, C_in, *S); emb_act = SiLU(emb): (B, E). Returns (B, C_out, *S)."""
        h = self.conv1(group_norm_silu(x, self.norm1))  # (B, C_out, *S)
        e = _broadcast(self.emb_proj(emb_act), self.dims)  # (B, 2 C_out or C_out, 1, ...)
        n2 = self.norm2
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = F.group_norm(h, n2.num_groups, n2.weight, n2.bias, n2.eps)
            h = F.silu(torch.addcmul(shift, h, 1 + scale))  # GN(h) (1 + s) + b
        else:
            h = group_norm_silu(h + e, n2)
        if self.dropout > 0:
            h = F.dropout(h, self.dropout, self.training)
        h = self.conv2(h)
        return (x if self.skip is None else self.skip(x)) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all spatial positions with a residual connection
    (Vaswani et al. 2017; used at low resolutions by Ho et al. 2020 and Dhariwal & Nichol 2021):
    x + W_o softmax(Q K^T / sqrt(d)) V, with Q, K, V = W_qkv GN(x) and d = head_channels."""

    def __init__(self, channels: int, cfg: UNetConfig) -> None:
        super().__init__()
        self.heads = channels // cfg.head_channels
        self.norm = nn.GroupNorm(cfg.norm_groups, channels, eps=_GN_EPS)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, *S) -> (B, C, *S). In channels-last layout the token view below is free."""
        B, C, *S = x.shape
        n = self.norm
        h = F.group_norm(x, n.num_groups, n.weight, n.bias, n.eps)
        tokens = h.movedim(1, -1).reshape(B, -1, C)  # (B, L, C)
        q, k, v = self.qkv(tokens).view(B, -1, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        out = attention(q, k, v)  # (B, heads, L, d)
        out = self.proj(out.transpose(1, 2).reshape(B, -1, C))  # (B, L, C)
        return x + out.view(B, *S, C).movedim(-1, 1)  # (B, C, *S)


class CrossAttentionBlock(nn.Module):
    """Cross-attention to text tokens and a feed-forward layer on the spatial tokens, placed after a
    self-attention block (Rombach et al. 2022, sec. 3.3 and their transformer block, Vaswani et al. 2017):
    h = x + CrossAttn(LN(x), ctx, mask); out = h + W_2 GELU(W_1 LN(h)). Both residual branches end in
    zero-initialised layers. Without tokens (ctx None) the cross-attention adds exactly 0, as for a mask
    with no True entry."""

    def __init__(self, channels: int, cfg: UNetConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(channels)
        self.attn = CrossAttention(channels, context_width(cfg), channels // cfg.head_channels)
        self.norm2 = nn.LayerNorm(channels)
        self.ff = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels))

    def forward(self, x: Tensor, context: tuple[Tensor, Tensor | None] | None) -> Tensor:
        """x: (B, C, *S), context: (tokens (B, T, D_ctx), mask (B, T) or None) or None -> (B, C, *S)."""
        B, C, *S = x.shape
        h = x.movedim(1, -1).reshape(B, -1, C)  # (B, L, C)
        if context is not None:
            h = h + self.attn(self.norm1(h), *context)
        h = h + self.ff(self.norm2(h))
        return h.view(B, *S, C).movedim(-1, 1)  # (B, C, *S)


class Downsample(nn.Module):
    """Halve every spatial size with a stride-2 3x3 convolution (Ho et al. 2020)."""

    def __init__(self, channels: int, dims: int) -> None:
        super().__init__()
        self.conv = CONV[dims](channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


# Nearest-neighbour 2x upsampling followed by a 3-tap filter w equals a stride-2 transposed
# filter with 4 taps (w2, w1 + w2, w0 + w1, w0): row t of this matrix maps w to tap t.
_UPSAMPLE_TAPS = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def upsample_conv_weight(w: Tensor) -> Tensor:
    """(C_out, C_in, 3, ..., 3) conv weight -> (C_in, C_out, 4, ..., 4) stride-2 transposed-conv weight
    such that conv_transpose(x, K, stride=2, padding=1) == conv(nearest_upsample_2x(x), w, padding=1)."""
    dims = w.ndim - 2
    taps = _UPSAMPLE_TAPS.to(w)
    k_in, k_out = "abc"[:dims], "tsu"[:dims]
    spec = ",".join(f"{o}{i}" for o, i in zip(k_out, k_in)) + f",oi{k_in}->io{k_out}"
    return torch.einsum(spec, *([taps] * dims), w)


class Upsample(nn.Module):
    """Double every spatial size: nearest-neighbour interpolation, then a 3x3 convolution (Ho et al.
    2020). Computed exactly as one stride-2 transposed convolution with 4x4 taps built from the 3x3
    weight: the same linear map with 16 instead of 36 multiply-adds per input pixel (2-D) and no
    4x-larger intermediate tensor."""

    def __init__(self, channels: int, cfg: UNetConfig) -> None:
        super().__init__()
        self.dims = cfg.dims
        self.memory_format = _memory_format(cfg)
        self.conv = CONV[cfg.dims](channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, *S) -> (B, C, *2S)."""
        weight = upsample_conv_weight(self.conv.weight)  # (C, C, 4, ..., 4)
        weight = weight.contiguous(memory_format=self.memory_format)
        return _CONV_TRANSPOSE[self.dims](x, weight, self.conv.bias, stride=2, padding=1)


class ConcatSkip(torch.autograd.Function):
    """torch.cat([h, skip], dim=1) whose backward hands out densely stored gradients. The plain
    backward returns channel slices of the incoming gradient; in channels-last layout those are
    strided tensors, and the convolutions they reach fall onto slow paths on CPU."""

    @staticmethod
    def forward(ctx, h: Tensor, skip: Tensor, memory_format: torch.memory_format) -> Tensor:
        ctx.channels, ctx.memory_format = h.shape[1], memory_format
        return torch.cat([h, skip], dim=1)  # (B, C_h + C_skip, *S)

    @staticmethod
    def backward(ctx, grad: Tensor):
        g_h, g_skip = grad.split([ctx.channels, grad.shape[1] - ctx.channels], dim=1)
        return g_h.contiguous(memory_format=ctx.memory_format), \
            g_skip.contiguous(memory_format=ctx.memory_format), None


class EmbedSequential(nn.Sequential):
    """A sequence of layers where residual blocks also receive the time embedding and cross-attention
    blocks the text context."""

    def forward(self, x: Tensor, emb_act: Tensor, context=None) -> Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb_act)
            elif isinstance(layer, CrossAttentionBlock):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


class UNet(nn.Module):
    """ADM-style U-Net (Ho et al. 2020; Dhariwal & Nichol 2021) predicting a tensor shaped like x.

    forward(x, c_noise, cond) with x: (B, in_channels, *S), c_noise: (B,) real-valued noise
    condition (a timestep 0..999, or EDM's ln(sigma) / 4), cond: None or a dict following the contract of
    `noisecraft.models.conditioning` (class_labels, text_tokens/text_mask, text_pooled, vector, concat);
    label `num_classes` is the null label for classifier-free guidance (Ho & Salimans 2022).
    Output: (B, out_channels, *S). Residual convs, attention projections and the output conv start
    at zero (ADM), so the network outputs exactly 0 at initialisation.

    cond["concat"] (B, concat_channels, *S): conv_in(x) + concat_in(c) with a bias-free concat_in, which is
    exactly the first convolution of the concatenation [x, c] (weight [W_x, W_c], bias conv_in's).
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if not isinstance(config, UNetConfig):
            raise ConfigError(f"UNet expects a UNetConfig, got {type(config).__name__}")
        self.config = cfg = config
        self.levels = len(cfg.channel_mult)
        self.memory_format = _memory_format(cfg)
        emb_ch = cfg.time_embed_mult * cfg.base_channels
        self.time_mlp = nn.Sequential(nn.Linear(cfg.base_channels, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        self.class_emb = nn.Embedding(cfg.num_classes + 1, emb_ch) if cfg.num_classes > 0 else None
        self.cond_emb = CondEmbedding(cfg.cond_spec, emb_ch)  # text_pooled / vector (no parameters when off)
        self.refiner = build_refiner(cfg, emb_ch)  # trainable n-gram block over the text tokens, or None
        self.conv_in = CONV[cfg.dims](cfg.in_channels, cfg.base_channels, 3, padding=1)
        # cond["concat"]: W_c of the first conv of [x, c] (bias-free: the bias is conv_in's)
        self.concat_in = (CONV[cfg.dims](cfg.concat_channels, cfg.base_channels, 3, padding=1, bias=False)
                          if cfg.concat_channels else None)
        skip_chs = self._build_down(emb_ch)
        self.mid = EmbedSequential(ResBlock(cfg.widths[-1], cfg.widths[-1], emb_ch, cfg),
                                   *(self._attention(cfg.widths[-1]) if cfg.mid_attention else []),
                                   ResBlock(cfg.widths[-1], cfg.widths[-1], emb_ch, cfg))
        self._build_up(emb_ch, skip_chs)
        self.norm_out = nn.GroupNorm(cfg.norm_groups, cfg.base_channels, eps=_GN_EPS)
        self.conv_out = CONV[cfg.dims](cfg.base_channels, cfg.output_channels, 3, padding=1)
        self._zero_init()
        self.to(memory_format=self.memory_format)

    def _build_down(self, emb_ch: int) -> list[int]:
        """Encoder: per level `num_res_blocks` blocks (+ attention), then a downsample (not last)."""
        cfg, ch, skip_chs = self.config, self.config.base_channels, [self.config.base_channels]
        self.down = nn.ModuleList()
        for level, width in enumerate(cfg.widths):
            for _ in range(cfg.num_res_blocks):
                attn = self._attention(width) if level in cfg.attention_levels else []
                self.down.append(EmbedSequential(ResBlock(ch, width, emb_ch, cfg), *attn))
                ch = width
                skip_chs.append(ch)
            if level < self.levels - 1:
                self.down.append(EmbedSequential(Downsample(ch, cfg.dims)))
                skip_chs.append(ch)
        return skip_chs

    def _build_up(self, emb_ch: int, skip_chs: list[int]) -> None:
        """Decoder: per level `num_res_blocks + 1` blocks on [h, skip] (+ attention), then an upsample."""
        cfg, ch = self.config, self.config.widths[-1]
        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(cfg.widths))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(ch + skip_chs.pop(), width, emb_ch, cfg)]
                ch = width
                if level in cfg.attention_levels:
                    layers += self._attention(width)
                if level > 0 and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch, cfg))
                self.up.append(EmbedSequential(*layers))

    def _attention(self, width: int) -> list[nn.Module]:
        """Self-attention, followed by cross-attention + feed-forward when the config has a context."""
        cfg = self.config
        return [AttentionBlock(width, cfg)] + ([CrossAttentionBlock(width, cfg)] if cfg.context_dim else [])

    def _zero_init(self) -> None:
        zeroed = [self.conv_out] + [m.conv2 for m in self.modules() if isinstance(m, ResBlock)]
        zeroed += [m.proj for m in self.modules() if isinstance(m, AttentionBlock)]
        zeroed += [m.ff[-1] for m in self.modules() if isinstance(m, CrossAttentionBlock)]
        zeroed += self.refiner.zeroed() if self.refiner is not None else []
        for module in zeroed:
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, x: Tensor, c_noise: Tensor, cond: dict | None = None) -> Tensor:
        c_noise = self._check_input(x, c_noise)
        cond = check_cond(cond, x.shape[0], self.config.cond_spec, "UNet", spatial=x.shape[2:])
        context, pooled = refined_context(self.refiner, cond)  # (tokens (B, T, D), mask) or None; (B, E) or 0
        emb = self._embed(c_noise, cond, x.shape[0]) + pooled  # (B, E)
        emb_act = F.silu(emb)
        h = self.conv_in(x.contiguous(memory_format=self.memory_format))  # (B, C_0, *S)
        if cond.get("concat") is not None:  # = conv of [x, c]
            h = h + self.concat_in(cond["concat"].to(x.dtype).contiguous(memory_format=self.memory_format))
        skips = [h]
        for block in self.down:
            h = block(h, emb_act, context)
            skips.append(h)
        h = self.mid(h, emb_act, context)  # (B, C_last, *S / 2^(levels-1))
        for block in self.up:
            h = block(ConcatSkip.apply(h, skips.pop(), self.memory_format), emb_act, context)
        return self.conv_out(group_norm_silu(h, self.norm_out)).contiguous()  # (B, C_out, *S)

    def _embed(self, c_noise: Tensor, cond: dict, batch: int) -> Tensor:
        """emb = MLP(sinusoid(c_noise)) (+ class embedding, + pooled/vector projections); no labels -> null."""
        dtype = self.conv_in.weight.dtype
        emb = self.time_mlp(timestep_embedding(c_noise, self.config.base_channels).to(dtype))  # (B, E)
        if self.class_emb is not None:
            emb = emb + self.class_emb(null_labels(cond.get("class_labels"), batch, self.config.num_classes,
                                                   emb.device))
        return emb + self.cond_emb(cond, dtype)  # (B, E)

    def _check_input(self, x: Tensor, c_noise: Tensor) -> Tensor:
        """Raise NoisecraftError for a wrong shape; a scalar c_noise is expanded to (B,)."""
        cfg, factor = self.config, 2 ** (self.levels - 1)
        expected = f"(B, {cfg.in_channels}, " + ", ".join(["S"] * cfg.dims) + f") with S divisible by {factor}"
        bad_spatial = any(s % factor for s in x.shape[2:])
        if x.ndim != cfg.dims + 2 or x.shape[1] != cfg.in_channels or bad_spatial:
            raise NoisecraftError(f"UNet input x: expected shape {expected}, got {tuple(x.shape)}")
        c_noise = torch.as_tensor(c_noise, device=x.device)
        if c_noise.ndim == 0:
            c_noise = c_noise.expand(x.shape[0])
        if c_noise.shape != (x.shape[0],):
            raise NoisecraftError(f"UNet c_noise: expected shape ({x.shape[0]},), got {tuple(c_noise.shape)}")
        return c_noise
