"""Convolutional autoencoder for latent diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis
with Latent Diffusion Models", section 3.1 and appendix G).

    x (B, C, H, W) --encoder--> moments (B, 2c, H/f, W/f) --posterior--> z (B, c, H/f, W/f) --decoder--> x_hat

The encoder is `conv_in`, one down block per entry of `block_channels` (residual blocks, then a stride-2
convolution except after the last block), a middle block (residual block, single-head self-attention,
residual block), GroupNorm + SiLU and `conv_out`. The decoder mirrors it with one more residual block per
level and nearest 2x upsampling + 3x3 convolution. The downsampling factor is f = 2^(len(block_channels) - 1).

Variants (`AutoencoderConfig.kind`):

- "kl": the encoder outputs the mean and log-variance of a diagonal Gaussian posterior q(z|x)
  (Kingma & Welling 2014, section 2.4); training adds a small KL(q(z|x) || N(0, I)) (`DiagonalGaussian.kl`).
- "deterministic": the encoder outputs z itself (no posterior, no KL term).

The module and parameter names are those of diffusers' `AutoencoderKL` (encoder.down_blocks.i.resnets.j.norm1,
encoder.mid_block.attentions.0.to_q, quant_conv, ...): the layer arithmetic is the same (GroupNorm eps 1e-6,
asymmetric (0, 1, 0, 1) zero padding before each stride-2 convolution, attention with a residual
connection), so a diffusers state dict loads with the identity key map (`noisecraft.autoencoder.interop`).

`encode(x)` returns the posterior mean (unscaled); `decode(z)` the image; `tiled_decode` decodes a large
latent tile by tile with linearly blended overlaps in bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from noisecraft.errors import NoisecraftError, require, unknown_name

AE_KINDS = ("kl", "deterministic")
GN_EPS = 1e-6          # GroupNorm epsilon of the LDM / diffusers autoencoders
LOGVAR_RANGE = (-30.0, 20.0)  # log-variance clamp of the LDM posterior (ldm/modules/distributions)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class AutoencoderConfig:
    """Hyper-parameters of `Autoencoder`; validated in `__post_init__`."""

    in_channels: int = 3                          # image channels
    out_channels: int | None = None               # decoded channels (None: in_channels)
    block_channels: tuple[int, ...] = (64, 128, 128)  # width per level; f = 2^(levels - 1)
    layers_per_block: int = 1                     # residual blocks per encoder level (decoder: one more)
    latent_channels: int = 4                      # c, channels of z
    norm_groups: int = 32                         # GroupNorm groups; must divide every width
    kind: str = "kl"                              # "kl" (Gaussian posterior) or "deterministic"
    mid_attention: bool = True                    # self-attention in the middle blocks
    quant_conv: bool = True                       # 1x1 conv on the moments (LDM, SD VAE)
    post_quant_conv: bool = True                  # 1x1 conv on z before the decoder

    def __post_init__(self):
        if self.kind not in AE_KINDS:
            raise unknown_name("autoencoder kind", self.kind, AE_KINDS)
        for name in ("in_channels", "layers_per_block", "latent_channels", "norm_groups"):
            v = getattr(self, name)
            require(_is_int(v) and v >= 1, f"AutoencoderConfig.{name}", f"must be an integer >= 1, got {v!r}")
        require(self.out_channels is None or (_is_int(self.out_channels) and self.out_channels >= 1),
                "AutoencoderConfig.out_channels", f"must be None or an integer >= 1, got {self.out_channels!r}")
        require(len(self.block_channels) >= 1 and all(_is_int(c) and c >= 1 for c in self.block_channels),
                "AutoencoderConfig.block_channels",
                f"must be one or more positive integers, got {self.block_channels!r}")
        bad = [c for c in self.block_channels if c % self.norm_groups]
        require(not bad, "AutoencoderConfig.norm_groups",
                f"{self.norm_groups} must divide every width in block_channels, not {bad}")

    @property
    def factor(self) -> int:
        """The spatial downsampling factor f."""
        return 2 ** (len(self.block_channels) - 1)

    @property
    def out_ch(self) -> int:
        return self.in_channels if self.out_channels is None else self.out_channels

    @property
    def moment_channels(self) -> int:
        """Channels the encoder outputs: 2c (mean, log-variance) for "kl", c for "deterministic"."""
        return 2 * self.latent_channels if self.kind == "kl" else self.latent_channels


AE_MODEL_PRESETS: dict[str, AutoencoderConfig] = {
    # f = 4, c = 4: 64x64x3 -> 16x16x4 (12x fewer values), 0.68M parameters; a narrow first level because the
    # full-resolution convolutions dominate the cost (benchmarks/latent_vs_pixel.md).
    "f4-small": AutoencoderConfig(block_channels=(16, 32, 64), layers_per_block=1, latent_channels=4,
                                  norm_groups=8),
    # f = 8, c = 4: 64x64x3 -> 8x8x4 (48x fewer values).
    "f8-small": AutoencoderConfig(block_channels=(16, 32, 64, 64), layers_per_block=1, latent_channels=4,
                                  norm_groups=8),
    # The Stable Diffusion VAE layout (f = 8, c = 4, 84M parameters).
    "sd": AutoencoderConfig(block_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            norm_groups=32),
}


# ----------------------------------------------------------------------------------------- posterior
class DiagonalGaussian:
    """q(z|x) = N(mean, diag(exp(logvar))) from the encoder's moments (B, 2c, h, w), split as (mean, logvar);
    logvar is clamped to [-30, 20] as in LDM."""

    def __init__(self, moments: Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(*LOGVAR_RANGE)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """z = mean + std * eps, eps ~ N(0, I) drawn in float32 from `generator` (reparameterisation)."""
        eps = torch.randn(self.mean.shape, generator=generator, dtype=torch.float32)
        return self.mean + self.std * eps.to(self.mean.device, self.mean.dtype)

    def mode(self) -> Tensor:
        return self.mean

    def kl(self) -> Tensor:
        """KL(q || N(0, I)) per sample, (B,): 0.5 * sum(mean^2 + var - 1 - logvar) over (c, h, w)
        (Kingma & Welling 2014, appendix B)."""
        return 0.5 * (self.mean.pow(2) + self.var - 1.0 - self.logvar).flatten(1).sum(dim=1)


# ------------------------------------------------------------------------------------------- layers
def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=GN_EPS)


class ResnetBlock(nn.Module):
    """GN-SiLU-conv3x3 twice, plus a 1x1 shortcut when the width changes (He et al. 2016; Ho et al. 2020 app. B
    without the time embedding)."""

    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.norm1 = _norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = _norm(c_out, groups)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return skip + h


class SelfAttention(nn.Module):
    """Single-head self-attention over the h*w positions with a residual connection (Vaswani et al. 2017;
    the LDM autoencoder's AttnBlock): x + W_o softmax(q k^T / sqrt(C)) v with q, k, v = W_{q,k,v} GN(x)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.group_norm = _norm(channels, groups)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        t = self.group_norm(x).flatten(2).transpose(1, 2)  # (B, hw, C)
        q, k, v = (lin(t)[:, None] for lin in (self.to_q, self.to_k, self.to_v))  # (B, 1, hw, C)
        a = F.scaled_dot_product_attention(q, k, v)[:, 0]  # (B, hw, C)
        return x + self.to_out[0](a).transpose(1, 2).reshape(b, c, h, w)


class Downsample(nn.Module):
    """Zero-pad (0, 1, 0, 1), then a 3x3 convolution with stride 2 (LDM's asymmetric padding)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling, then a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """`n` residual blocks, then an optional resampler (`downsamplers` or `upsamplers`, a list of one)."""

    def __init__(self, n: int, c_in: int, c_out: int, groups: int, resample: str | None):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(c_in if i == 0 else c_out, c_out, groups) for i in range(n)])
        if resample == "down":
            self.downsamplers = nn.ModuleList([Downsample(c_out)])
        elif resample == "up":
            self.upsamplers = nn.ModuleList([Upsample(c_out)])

    def forward(self, x: Tensor) -> Tensor:
        for block in self.resnets:
            x = block(x)
        for resample in getattr(self, "downsamplers", getattr(self, "upsamplers", ())):
            x = resample(x)
        return x


class MidBlock(nn.Module):
    """Residual block, self-attention (optional), residual block at the lowest resolution."""

    def __init__(self, channels: int, groups: int, attention: bool):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, groups) for _ in range(2)])
        self.attentions = nn.ModuleList([SelfAttention(channels, groups)] if attention else [])

    def forward(self, x: Tensor) -> Tensor:
        x = self.resnets[0](x)
        for attn in self.attentions:
            x = attn(x)
        return self.resnets[1](x)


class Encoder(nn.Module):
    """(B, C, H, W) -> (B, moment_channels, H/f, W/f)."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        ch, g = cfg.block_channels, cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        last = len(ch) - 1
        self.down_blocks = nn.ModuleList([
            Level(cfg.layers_per_block, ch[max(i - 1, 0)], ch[i], g, "down" if i < last else None)
            for i in range(len(ch))
        ])
        self.mid_block = MidBlock(ch[-1], g, cfg.mid_attention)
        self.conv_norm_out = _norm(ch[-1], g)
        self.conv_out = nn.Conv2d(ch[-1], cfg.moment_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down_blocks:
            h = level(h)
        h = self.mid_block(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class Decoder(nn.Module):
    """(B, c, h, w) -> (B, C, h f, w f)."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        ch, g = tuple(reversed(cfg.block_channels)), cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch[0], 3, padding=1)
        self.mid_block = MidBlock(ch[0], g, cfg.mid_attention)
        last = len(ch) - 1
        self.up_blocks = nn.ModuleList([
            Level(cfg.layers_per_block + 1, ch[max(i - 1, 0)], ch[i], g, "up" if i < last else None)
            for i in range(len(ch))
        ])
        self.conv_norm_out = _norm(ch[-1], g)
        self.conv_out = nn.Conv2d(ch[-1], cfg.out_ch, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid_block(self.conv_in(z))
        for level in self.up_blocks:
            h = level(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


# -------------------------------------------------------------------------------------- autoencoder
class Autoencoder(nn.Module):
    """The autoencoder of `cfg`. `scaling_factor` / `shift_factor` are properties of trained weights
    (z_diffusion = (z - shift) * scale), set by the trainer or a loaded checkpoint."""

    def __init__(self, cfg: AutoencoderConfig, *, scaling_factor: float = 1.0, shift_factor: float = 0.0):
        super().__init__()
        self.config = cfg
        self.scaling_factor = float(scaling_factor)
        self.shift_factor = float(shift_factor)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        m, c = cfg.moment_channels, cfg.latent_channels
        self.quant_conv = nn.Conv2d(m, m, 1) if cfg.quant_conv else None
        self.post_quant_conv = nn.Conv2d(c, c, 1) if cfg.post_quant_conv else None

    @property
    def factor(self) -> int:
        return self.config.factor

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    # ---- checks
    def _check_image(self, x: Tensor) -> None:
        c, f = self.config.in_channels, self.factor
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != c:
            raise NoisecraftError(f"autoencoder input must be images (B, {c}, H, W), "
                                  f"got {tuple(getattr(x, 'shape', ()))}")
        if x.shape[-2] % f or x.shape[-1] % f:
            raise NoisecraftError(f"image size {x.shape[-2]}x{x.shape[-1]} is not divisible by the autoencoder's "
                                  f"downsampling factor f={f}; crop or resize to a multiple of {f}")

    def _check_latent(self, z: Tensor) -> None:
        c = self.config.latent_channels
        if not isinstance(z, Tensor) or z.ndim != 4 or z.shape[1] != c:
            raise NoisecraftError(f"latent must have shape (B, {c}, h, w) for this autoencoder "
                                  f"({c} latent channels), got {tuple(getattr(z, 'shape', ()))}")

    # ---- encoder side
    def moments(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> the encoder's output after quant_conv, (B, moment_channels, H/f, W/f)."""
        self._check_image(x)
        h = self.encoder(x)
        return h if self.quant_conv is None else self.quant_conv(h)

    def posterior(self, x: Tensor) -> DiagonalGaussian | None:
        """q(z|x) for "kl"; None for "deterministic"."""
        return DiagonalGaussian(self.moments(x)) if self.config.kind == "kl" else None

    def encode(self, x: Tensor) -> Tensor:
        """x -> z: the posterior mean ("kl") or the code ("deterministic"); unscaled."""
        m = self.moments(x)
        return m[:, : self.config.latent_channels] if self.config.kind == "kl" else m

    # ---- decoder side
    def decode(self, z: Tensor) -> Tensor:
        """z (B, c, h, w), unscaled -> x_hat (B, C, h f, w f)."""
        self._check_latent(z)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def tiled_decode(self, z: Tensor, *, tile: int = 32, overlap: int = 8) -> Tensor:
        """Decode tile by tile (latent tiles of side `tile`, overlapping by `overlap`) with linear blending;
        see `tiled_apply`. Exact when z fits in one tile; otherwise the tiles see no context beyond their
        borders (the mid-block attention is per tile), as in every tiled VAE decoder."""
        self._check_latent(z)
        return tiled_apply(self.decode, z, scale=self.factor, tile=tile, overlap=overlap,
                           out_channels=self.config.out_ch)

    def forward(self, x: Tensor, generator: torch.Generator | None = None):
        """Training pass: (reconstruction, posterior or None). "kl" decodes a posterior sample."""
        if self.config.kind == "kl":
            post = self.posterior(x)
            return self.decode(post.sample(generator)), post
        return self.decode(self.encode(x)), None

    # ---- scaled latents for the diffusion model
    def to_diffusion(self, z: Tensor) -> Tensor:
        return (z - self.shift_factor) * self.scaling_factor

    def from_diffusion(self, z: Tensor) -> Tensor:
        return z / self.scaling_factor + self.shift_factor


# --------------------------------------------------------------------------------------- tiling
def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of side `tile` with stride tile - overlap covering [0, size); the last tile
    is moved back to end at `size` (so every tile is full-sized)."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return sorted(set(starts))


def edge_ramp(length: int, ramp_lo: bool, ramp_hi: bool, overlap: int) -> Tensor:
    """1-D weights of one tile: (d + 1) / (overlap + 1) at distance d < overlap from a border that lies inside
    the image (`ramp_lo` / `ramp_hi`), 1 elsewhere (borders on the image edge are not ramped)."""
    d = torch.arange(length, dtype=torch.float64)
    w = torch.ones(length, dtype=torch.float64)
    if ramp_lo:
        w = torch.minimum(w, (d + 1) / (overlap + 1))
    if ramp_hi:
        w = torch.minimum(w, (length - d) / (overlap + 1))
    return w


def blend_weights_1d(size: int, tile: int, overlap: int) -> list[tuple[int, Tensor]]:
    """For each tile along one axis of `size` samples: (start, raw weights (min(tile, size),)), a linear ramp
    over `overlap` samples at each border shared with a neighbour. `tiled_apply` divides by the sum of the
    weights of all tiles covering a position, so the blending weights sum to exactly 1 everywhere."""
    starts = tile_starts(size, tile, overlap)
    n = len(starts)
    return [(s, edge_ramp(min(tile, size), i > 0, i < n - 1, overlap)) for i, s in enumerate(starts)]


def tiled_apply(fn, z: Tensor, *, scale: int, tile: int, overlap: int, out_channels: int) -> Tensor:
    """Apply `fn` ((B, c, t, t) -> (B, C, t scale, t scale)) to overlapping latent tiles (side `tile`, stride
    tile - overlap) and blend: out = sum_i w_i fn(z_i) / sum_i w_i, with w_i the separable linear ramps of
    `blend_weights_1d` in output space (overlap * scale samples). A position covered by one tile gets that
    tile's output exactly; in overlaps the weights move linearly from one tile to the next.

    Memory: the output (B, C, H, W), one (H, W) weight sum and one tile's activations, whatever the size."""
    if not (_is_int(tile) and _is_int(overlap) and tile >= 1 and 0 <= overlap < tile):
        raise NoisecraftError(f"tiled decoding needs integers tile >= 1 and 0 <= overlap < tile, "
                              f"got tile={tile!r}, overlap={overlap!r}")
    b, _, h, w = z.shape
    rows = blend_weights_1d(h * scale, tile * scale, overlap * scale)
    cols = blend_weights_1d(w * scale, tile * scale, overlap * scale)
    out, total = None, torch.zeros(h * scale, w * scale, dtype=torch.float64)
    for r0, wr in rows:
        for c0, wc in cols:
            r, c = r0 // scale, c0 // scale
            piece = fn(z[:, :, r:r + tile, c:c + tile])  # (B, C, th, tw)
            if out is None:
                out = torch.zeros(b, out_channels, h * scale, w * scale, dtype=piece.dtype, device=piece.device)
            weight = wr[:, None] * wc[None, :]  # (th, tw)
            th, tw = weight.shape
            total[r0:r0 + th, c0:c0 + tw] += weight
            out[:, :, r0:r0 + th, c0:c0 + tw] += piece * weight.to(piece.device, piece.dtype)
    return out / total.to(out.device, out.dtype)


def num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def latent_shape(cfg: AutoencoderConfig, image_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) image -> (c, H/f, W/f); NoisecraftError if H or W is not divisible by f."""
    _, h, w = image_shape
    f = cfg.factor
    if h % f or w % f:
        raise NoisecraftError(f"image size {h}x{w} is not divisible by the autoencoder's factor f={f}")
    return (cfg.latent_channels, h // f, w // f)


__all__ = [
    "AE_KINDS", "AE_MODEL_PRESETS", "Autoencoder", "AutoencoderConfig", "DiagonalGaussian", "blend_weights_1d",
    "latent_shape", "num_parameters", "tiled_apply", "tile_starts",
]
