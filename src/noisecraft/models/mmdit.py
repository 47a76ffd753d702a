"""Multimodal Diffusion Transformer (MMDiT): Esser et al. 2024, "Scaling Rectified Flow Transformers for
High-Resolution Image Synthesis" (Stable Diffusion 3), sec. 4 and Fig. 2; optional 2-D rotary positions as
FLUX.1 (Black Forest Labs 2024; RoPE: Su et al. 2021).

    x (B, C, H, W) --patchify (p x p conv)--> image tokens (B, N, h) + position embedding (SD3: 2-D sin-cos)
    text tokens (B, T, D_ctx) --Linear (context embedder)--> (B, T, h)
    c = MLP(sinusoid(c_noise)) + MLP(text_pooled) (+ class embedding, + Linear(vector))  (B, h)  (Fig. 2a)
    N joint blocks (Fig. 2b), one set of weights per modality m in {image, text}:
        (shift1, scale1, gate1, shift2, scale2, gate2)_m = Linear_m(SiLU(c))         adaLN-Zero (zero init)
        q_m, k_m, v_m = W_m (LN(t_m) (1 + scale1_m) + shift1_m);  q_m, k_m = RMSNorm(q_m), RMSNorm(k_m)
                                                            (QK-norm, sec. 5.3.2 / Eq. 24 context, eps 1e-6)
        [o_img, o_txt] = softmax([q_img, q_txt] [k_img, k_txt]^T / sqrt(d) + mask) [v_img, v_txt]
                                                            one joint attention over both sequences
        t_m = t_m + gate1_m W^o_m o_m;  t_m = t_m + gate2_m FF_m(LN(t_m) (1 + scale2_m) + shift2_m)
                                                            FF = Linear, GELU (tanh), Linear
    the last block is "context-pre-only": the text stream only gives keys and values (its modulation is an
    AdaLayerNormContinuous, (scale, shift) = Linear(SiLU(c)), and it has no output projection or FF; its text
    queries, whose outputs SD3 discards, are not computed, though their weights are kept for SD3's checkpoints)
    out: LN(t_img) (1 + scale) + shift with (scale, shift) = Linear(SiLU(c)) (norm_out), Linear(h, p p C_out),
    unpatchify

RoPE (rope_axes_dim, as FLUX): after QK-norm, each head's channels are cut into axes of widths axes_dim
(sum = head width d); channel pairs (2i, 2i + 1) of axis a are rotated by the angle pos_a * theta^(-2i / dim_a)
(interleaved pairs). Image token (row, col) has positions (row, col), or (0, row, col) with three axes (FLUX's
image-index axis); text tokens have position 0 on every axis, i.e. are not rotated. With pos_embed="none" the
rotary positions are the only positions, and any patch grid is accepted.

Position embedding (SD3's PatchEmbed): "sincos" is a fixed 2-D sin-cos table over a grid of G = input_size / p
cells, or of G = pos_embed_max_size cells when that is > 0, in which case coordinates are scaled by
(input_size / p) / G and the centre of the table is cropped to the input's patch grid (SD3 "cropping");
"learned" is a parameter initialised to the same values (how SD3's persistent table is loaded); "none" adds none.

Text padding: cond["text_mask"] False tokens are excluded as keys of the joint attention (SD3 attends to all
its 77 + 77 padded tokens; with an all-True mask ours is the same computation), so batching prompts of
different lengths (guidance) changes nothing. Inputs the model does not take raise NoisecraftError naming the
limit: an image side not divisible by the patch size, more text tokens than max_text_tokens, a cond key
the model was configured without (`noisecraft.models.conditioning.check_cond`).

Notation: B batch, N = (H / p) (W / p) image tokens, T text tokens, h = hidden_size, d = h / num_heads.
The diffusion time is the network's c_noise (1000 t for the flow schedule, as SD3's timestep).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from noisecraft.errors import ConfigError, NoisecraftError, require
from noisecraft.models.conditioning import CondEmbedding, CondSpec, check_cond, null_labels
from noisecraft.models.unet import timestep_embedding

MMDIT_POS_EMBEDS = ("sincos", "learned", "none")
_EPS = 1e-6  # LayerNorm and QK RMSNorm epsilon of SD3 / FLUX


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class MMDiTConfig:
    """Hyper-parameters of `MMDiT`; every field is validated in `__post_init__`."""

    in_channels: int = 1  # channels of the input x (1 for MNIST, 3 for RGB, 4 / 16 for latents)
    out_channels: int | None = None  # channels of the output; None -> same as in_channels
    input_size: int = 28  # H = W of the training input (the trainer sets it from the data)
    patch_size: int = 2  # p: the input is cut into (H / p)^2 patches of p x p pixels
    hidden_size: int = 128  # token width h of both streams; divisible by num_heads (and by 4 for sin-cos)
    depth: int = 4  # joint blocks (the last one is context-pre-only)
    num_heads: int = 4  # attention heads; head width d = hidden_size / num_heads
    mlp_ratio: float = 4.0  # FF hidden width = mlp_ratio * hidden_size (SD3: 4)
    pos_embed: str = "sincos"  # "sincos" (fixed, SD3), "learned" (initialised to sin-cos) or "none" (RoPE only)
    pos_embed_max_size: int = 0  # >0: SD3's pos_embed_max_size, the sin-cos grid that is centre-cropped
    qk_norm: bool = True  # RMSNorm on queries and keys per head (SD3.5, FLUX; sec. 5.3.2); False as SD3.0
    rope_axes_dim: tuple[int, ...] = ()  # () off; 2 (row, col) or 3 (index, row, col) even widths summing to d
    rope_theta: float = 10000.0  # RoPE base (FLUX: 10000)
    freq_dim: int = 256  # width of the sinusoidal time embedding (SD3: 256)
    max_text_tokens: int = 77  # the longest text sequence accepted (an error names it beyond)
    num_classes: int = 0  # >0: class embedding added to c; label num_classes = null label
    context_dim: int = 0  # >0: width D_ctx of cond["text_tokens"], the text stream's input
    pooled_dim: int = 0  # >0: width of cond["text_pooled"], embedded by an MLP into c (SD3's text_embedder)
    vector_dim: int = 0  # >0: width of cond["vector"], added to c through a Linear
    concat_channels: int = 0  # >0: channels of cond["concat"], patch-embedded with x

    def __post_init__(self) -> None:
        optional = ("num_classes", "context_dim", "pooled_dim", "vector_dim", "concat_channels", "pos_embed_max_size")
        for name in ("in_channels", "input_size", "patch_size", "hidden_size", "depth", "num_heads", "freq_dim",
                     "max_text_tokens", *optional):
            value = getattr(self, name)
            require(_is_int(value), f"MMDiTConfig.{name}", f"expected an integer, got {value!r}")
            low = 0 if name in optional else 1
            require(value >= low, f"MMDiTConfig.{name}", f"must be >= {low}, got {value}")
        require(self.out_channels is None or (_is_int(self.out_channels) and self.out_channels >= 1),
                "MMDiTConfig.out_channels", f"expected an integer >= 1 or None, got {self.out_channels!r}")
        require(isinstance(self.mlp_ratio, int | float) and not isinstance(self.mlp_ratio, bool)
                and self.mlp_ratio > 0, "MMDiTConfig.mlp_ratio", f"must be a number > 0, got {self.mlp_ratio!r}")
        require(isinstance(self.qk_norm, bool), "MMDiTConfig.qk_norm", f"expected true or false, got {self.qk_norm!r}")
        if self.pos_embed not in MMDIT_POS_EMBEDS:
            raise ConfigError(f"MMDiTConfig.pos_embed: unknown position embedding {self.pos_embed!r}; "
                              f"allowed: {', '.join(MMDIT_POS_EMBEDS)}")
        require(self.input_size % self.patch_size == 0, "MMDiTConfig.patch_size",
                f"{self.patch_size} must divide input_size {self.input_size} (allowed image sizes: multiples of "
                f"{self.patch_size})")
        require(self.hidden_size % self.num_heads == 0, "MMDiTConfig.num_heads",
                f"{self.num_heads} must divide hidden_size {self.hidden_size}")
        require(self.pos_embed == "none" or self.hidden_size % 4 == 0, "MMDiTConfig.hidden_size",
                f"must be divisible by 4 for the 2-D sin-cos embedding, got {self.hidden_size}")
        require(self.pos_embed_max_size == 0 or self.pos_embed_max_size >= self.grid_size,
                "MMDiTConfig.pos_embed_max_size", f"must be 0 or >= the patch grid input_size / patch_size = "
                f"{self.grid_size}, got {self.pos_embed_max_size}")
        require(self.freq_dim % 2 == 0, "MMDiTConfig.freq_dim", f"must be even (cos/sin pairs), got {self.freq_dim}")
        axes = self.rope_axes_dim
        require(isinstance(axes, tuple) and all(_is_int(a) and a >= 2 and a % 2 == 0 for a in axes),
                "MMDiTConfig.rope_axes_dim", f"expected even integers >= 2, got {axes!r}")
        require(len(axes) in (0, 2, 3), "MMDiTConfig.rope_axes_dim",
                f"needs 2 axes (row, col) or 3 (index, row, col) or none (off), got {len(axes)}")
        require(not axes or sum(axes) == self.head_dim, "MMDiTConfig.rope_axes_dim",
                f"the axes must sum to the head width hidden_size / num_heads = {self.head_dim}, got {sum(axes)}")
        require(isinstance(self.rope_theta, int | float) and not isinstance(self.rope_theta, bool)
                and self.rope_theta > 1, "MMDiTConfig.rope_theta", f"must be a number > 1, got {self.rope_theta!r}")
        require(self.pos_embed != "none" or bool(axes), "MMDiTConfig.pos_embed",
                "'none' leaves the tokens without positions: set rope_axes_dim too")

    @property
    def output_channels(self) -> int:
        return self.in_channels if self.out_channels is None else self.out_channels

    @property
    def grid_size(self) -> int:
        return self.input_size // self.patch_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def cond_spec(self) -> CondSpec:
        return CondSpec(self.num_classes, self.context_dim, self.pooled_dim, self.vector_dim, self.concat_channels)

    def for_data(self, shape: tuple[int, ...]) -> MMDiTConfig:
        """This config with in_channels and input_size from a data sample's shape (C, S, S) (square images)."""
        if len(shape) != 3 or shape[1] != shape[2]:
            raise ConfigError(f"the MMDiT backbone needs square images (C, S, S); the data has shape {tuple(shape)}")
        if shape[1] % self.patch_size:
            raise ConfigError(f"the data's image size {shape[1]} is not divisible by the MMDiT patch size "
                              f"{self.patch_size} (network.patch_size); allowed: patch sizes that divide {shape[1]}")
        return replace(self, in_channels=shape[0], input_size=shape[1])

    def data_shape(self, side=None) -> tuple[int, ...]:
        """(in_channels, input_size, input_size); the size is in the config (`side` is not called)."""
        return (self.in_channels, self.input_size, self.input_size)


MMDIT_PRESETS: dict[str, MMDiTConfig] = {
    # ~60k parameters: unit tests and smoke runs.
    "tiny": MMDiTConfig(patch_size=2, hidden_size=32, depth=2, num_heads=2),
    # 28x28 MNIST with 2x2 patches would be 196 tokens; 4x4 patches give 49 (as mnist-dit).
    "mnist": MMDiTConfig(in_channels=1, input_size=28, patch_size=4, hidden_size=128, depth=6, num_heads=4),
    # 32x32 RGB scenes with 4x4 patches: 64 image tokens beside the text tokens.
    "scenes": MMDiTConfig(in_channels=3, input_size=32, patch_size=4, hidden_size=128, depth=6, num_heads=4),
    # 8x8x4 latents with 2x2 patches: 16 image tokens.
    "latent": MMDiTConfig(in_channels=4, input_size=8, patch_size=2, hidden_size=128, depth=6, num_heads=4),
}


def sd3_sincos_pos_embed(dim: int, grid_size: int, base_size: int | None = None) -> Tensor:
    """SD3's fixed 2-D sin-cos embedding (MAE / DiT's with scaled coordinates), (grid^2, dim) float64 in
    row-major order: coordinate i maps to i base_size / grid_size (base_size = grid_size: the DiT table). Half
    the channels encode the column and half the row, each [sin(pos w_j), cos(pos w_j)], w_j = 10000^(-j / (dim/4))."""
    base = grid_size if base_size is None else base_size
    pos = (torch.arange(grid_size, dtype=torch.float32) / (grid_size / base)).double()  # as SD3 (float32 grid)
    row, col = torch.meshgrid(pos, pos, indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))

    def embed_1d(coord: Tensor) -> Tensor:
        out = coord.reshape(-1, 1) * omega  # (N, dim/4)
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)  # (N, dim/2)

    return torch.cat([embed_1d(col), embed_1d(row)], dim=1)  # (N, dim)


def rope_frequencies(positions: Tensor, axes_dim: tuple[int, ...], theta: float = 10000.0) -> tuple[Tensor, Tensor]:
    """cos and sin (L, sum(axes_dim)) float32 of rotary position embeddings (Su et al. 2021) over several axes,
    as FLUX: axis a of width dim_a rotates its channel pair (2i, 2i + 1) by pos_a theta^(-2i / dim_a); each
    angle is repeated for the two channels of its pair. positions: (L, len(axes_dim))."""
    cos, sin = [], []
    for a, dim in enumerate(axes_dim):
        freqs = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (dim/2,)
        angles = positions[:, a].to(torch.float64)[:, None] * freqs  # (L, dim/2)
        cos.append(angles.cos().repeat_interleave(2, dim=1))
        sin.append(angles.sin().repeat_interleave(2, dim=1))
    return torch.cat(cos, dim=1).float(), torch.cat(sin, dim=1).float()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate interleaved channel pairs: (x_{2i}, x_{2i+1}) -> (x_{2i} cos - x_{2i+1} sin, x_{2i+1} cos + x_{2i} sin).
    x: (B, heads, L, d); cos, sin: (L, d)."""
    real, imag = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)  # (B, heads, L, d/2) each
    rotated = torch.stack([-imag, real], dim=-1).flatten(-2)  # (B, heads, L, d)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: x (1 + scale) + shift, with (B, h) shift/scale broadcast over the tokens of x (B, L, h)."""
    return x * (1 + scale[:, None]) + shift[:, None]


class _Stream(nn.Module):
    """The weights of one modality in a joint block: its modulation, q/k/v, QK-norm, output projection and FF.
    pre_only (the text stream of the last block): only q/k/v after an AdaLayerNormContinuous (scale, shift)."""

    def __init__(self, cfg: MMDiTConfig, pre_only: bool = False) -> None:
        super().__init__()
        h, d = cfg.hidden_size, cfg.head_dim
        self.heads, self.pre_only = cfg.num_heads, pre_only
        self.modulation = nn.Linear(h, (2 if pre_only else 6) * h)
        self.norm1 = nn.LayerNorm(h, elementwise_affine=False, eps=_EPS)
        self.qkv = nn.Linear(h, 3 * h)
        self.norm_q = nn.RMSNorm(d, eps=_EPS) if cfg.qk_norm else nn.Identity()
        self.norm_k = nn.RMSNorm(d, eps=_EPS) if cfg.qk_norm else nn.Identity()
        if pre_only:
            self.proj = self.norm2 = self.mlp = None
        else:
            self.proj = nn.Linear(h, h)
            self.norm2 = nn.LayerNorm(h, elementwise_affine=False, eps=_EPS)
            hidden = int(h * cfg.mlp_ratio)
            self.mlp = nn.Sequential(nn.Linear(h, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, h))

    def pre_attention(self, t: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor, tuple[Tensor, ...]]:
        """q, k, v (B, heads, L, d) of tokens t (B, L, h) and the rest of the modulation
        (gate1, shift2, scale2, gate2; empty when pre_only)."""
        mod = self.modulation(F.silu(c))
        if self.pre_only:
            scale, shift = mod.chunk(2, dim=1)  # AdaLayerNormContinuous order
            rest: tuple[Tensor, ...] = ()
        else:
            shift, scale, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=1)
            rest = (gate1, shift2, scale2, gate2)
        B, L, h = t.shape
        qkv = self.qkv(_modulate(self.norm1(t), shift, scale)).view(B, L, 3, self.heads, h // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, heads, L, d) each
        return self.norm_q(q), self.norm_k(k), v, rest

    def post_attention(self, t: Tensor, o: Tensor, rest: tuple[Tensor, ...]) -> Tensor:
        gate1, shift2, scale2, gate2 = rest
        t = t + gate1[:, None] * self.proj(o)
        return t + gate2[:, None] * self.mlp(_modulate(self.norm2(t), shift2, scale2))


class MMDiTBlock(nn.Module):
    """One joint block (Esser et al. 2024, Fig. 2b): image and text streams with their own weights, one
    attention over the concatenated [image, text] sequence. context_pre_only: the text stream ends here."""

    def __init__(self, cfg: MMDiTConfig, context_pre_only: bool = False) -> None:
        super().__init__()
        self.context_pre_only = context_pre_only
        self.x = _Stream(cfg)
        self.ctx = _Stream(cfg, pre_only=context_pre_only) if cfg.context_dim else None

    def forward(self, x: Tensor, ctx: Tensor | None, c: Tensor, rope: tuple[Tensor, Tensor] | None = None,
                mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """x: (B, N, h) image tokens, ctx: (B, T, h) text tokens or None, c: (B, h), rope: (cos, sin) of the
        N + T tokens in [image, text] order (or of the N image tokens without text), mask: (B, T) bool or None.
        Returns (x, ctx) after the block; ctx is None after a context-pre-only block."""
        N = x.shape[1]
        q, k, v, x_rest = self.x.pre_attention(x, c)
        attn_mask = None
        use_ctx = ctx is not None and self.ctx is not None
        if use_ctx:
            qc, kc, vc, c_rest = self.ctx.pre_attention(ctx, c)
            k, v = torch.cat([k, kc], dim=2), torch.cat([v, vc], dim=2)
            if not self.context_pre_only:  # the last block's text outputs are discarded: only image queries
                q = torch.cat([q, qc], dim=2)
            if mask is not None:  # padded text tokens are nobody's keys; image keys are always there
                keep = torch.cat([mask.new_ones(mask.shape[0], N), mask], dim=1)  # (B, N + T)
                attn_mask = keep[:, None, None, :]
        if rope is not None:
            cos, sin = rope
            q = apply_rope(q, cos[:q.shape[2]], sin[:q.shape[2]])
            k = apply_rope(k, cos[:k.shape[2]], sin[:k.shape[2]])
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, heads, N (+ T), d)
        B, heads, L, d = o.shape
        o = o.transpose(1, 2).reshape(B, L, heads * d)
        x = self.x.post_attention(x, o[:, :N], x_rest)
        if not use_ctx or self.context_pre_only:
            return x, None
        return x, self.ctx.post_attention(ctx, o[:, N:], c_rest)


class MMDiT(nn.Module):
    """MMDiT: forward(x, c_noise, cond) with x: (B, in_channels, H, W), c_noise: (B,) real-valued time
    condition, cond: None or a conditioning dict. Returns (B, out_channels, H, W), exactly 0 at
    initialisation (adaLN-Zero and a zero output layer)."""

    def __init__(self, config: MMDiTConfig) -> None:
        super().__init__()
        if not isinstance(config, MMDiTConfig):
            raise ConfigError(f"MMDiT expects an MMDiTConfig, got {type(config).__name__}")
        self.config = cfg = config
        h, p = cfg.hidden_size, cfg.patch_size
        self.x_embedder = nn.Conv2d(cfg.in_channels, h, p, stride=p)
        self.concat_in = nn.Conv2d(cfg.concat_channels, h, p, stride=p, bias=False) if cfg.concat_channels else None
        table_grid = cfg.pos_embed_max_size or cfg.grid_size
        if cfg.pos_embed == "none":
            self.pos_embed = None
        else:
            pos = sd3_sincos_pos_embed(h, table_grid, cfg.grid_size).float()[None]  # (1, G^2, h)
            if cfg.pos_embed == "learned":
                self.pos_embed = nn.Parameter(pos)
            else:
                self.register_buffer("pos_embed", pos, persistent=False)
        self.t_embedder = nn.Sequential(nn.Linear(cfg.freq_dim, h), nn.SiLU(), nn.Linear(h, h))
        self.pooled_embedder = (nn.Sequential(nn.Linear(cfg.pooled_dim, h), nn.SiLU(), nn.Linear(h, h))
                                if cfg.pooled_dim else None)
        self.y_embedder = nn.Embedding(cfg.num_classes + 1, h) if cfg.num_classes else None
        self.cond_emb = CondEmbedding(CondSpec(vector_dim=cfg.vector_dim), h)  # Linear(vector)
        self.context_embedder = nn.Linear(cfg.context_dim, h) if cfg.context_dim else None
        self.blocks = nn.ModuleList(MMDiTBlock(cfg, context_pre_only=i == cfg.depth - 1) for i in range(cfg.depth))
        self.norm_out = nn.LayerNorm(h, elementwise_affine=False, eps=_EPS)
        self.norm_out_modulation = nn.Linear(h, 2 * h)
        self.proj_out = nn.Linear(h, p * p * cfg.output_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        """As DiT (Peebles & Xie 2023): Xavier-uniform Linear layers with zero bias, the patch embedding as a
        Linear, N(0, 0.02) time MLP and class table; every modulation and the output layer at zero (adaLN-Zero)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for conv in (self.x_embedder, self.concat_in):
            if conv is not None:
                nn.init.xavier_uniform_(conv.weight.view(conv.weight.shape[0], -1))
        nn.init.zeros_(self.x_embedder.bias)
        for layer in (self.t_embedder[0], self.t_embedder[2]):
            nn.init.normal_(layer.weight, std=0.02)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.weight, std=0.02)
        zeroed = [s.modulation for b in self.blocks for s in (b.x, b.ctx) if s is not None]
        zeroed += [self.norm_out_modulation, self.proj_out]
        for m in zeroed:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    # ---------------------------------------------------------------------------------------- forward
    def forward(self, x: Tensor, c_noise: Tensor, cond: dict | None = None) -> Tensor:
        c_noise, gh, gw = self._check_input(x, c_noise)
        B = x.shape[0]
        cond = check_cond(cond, B, self.config.cond_spec, "MMDiT", spatial=x.shape[2:])
        patches = self.x_embedder(x)  # (B, h, gh, gw)
        if cond.get("concat") is not None:
            patches = patches + self.concat_in(cond["concat"].to(patches.dtype))
        tokens = patches.flatten(2).transpose(1, 2)  # (B, N, h)
        if self.pos_embed is not None:
            tokens = tokens + self._pos(gh, gw).to(tokens.dtype)
        c = self._embed(c_noise, cond, B)  # (B, h)
        ctx, mask = self._context(cond, tokens.dtype)
        rope = self._rope(gh, gw, 0 if ctx is None else ctx.shape[1], x.device)
        for block in self.blocks:
            tokens, ctx = block(tokens, ctx, c, rope, mask)
        scale, shift = self.norm_out_modulation(F.silu(c)).chunk(2, dim=1)  # AdaLayerNormContinuous order
        out = self.proj_out(_modulate(self.norm_out(tokens), shift, scale))  # (B, N, p p C_out)
        return self.unpatchify(out, gh, gw)

    def _embed(self, c_noise: Tensor, cond: dict, batch: int) -> Tensor:
        """c = MLP(sinusoid(c_noise)) + MLP(text_pooled) + class embedding (null label when absent) + Linear(vector)."""
        dtype = self.x_embedder.weight.dtype
        c = self.t_embedder(timestep_embedding(c_noise, self.config.freq_dim).to(dtype))
        if self.pooled_embedder is not None and cond.get("text_pooled") is not None:
            c = c + self.pooled_embedder(cond["text_pooled"].to(dtype))
        if self.y_embedder is not None:
            c = c + self.y_embedder(null_labels(cond.get("class_labels"), batch, self.config.num_classes, c.device))
        return c + self.cond_emb(cond, dtype)

    def _context(self, cond: dict, dtype: torch.dtype) -> tuple[Tensor | None, Tensor | None]:
        tokens = cond.get("text_tokens")
        if tokens is None:
            return None, None
        limit = self.config.max_text_tokens
        if tokens.shape[1] > limit:
            raise NoisecraftError(f"MMDiT: {tokens.shape[1]} text tokens given, but the model takes at most {limit} "
                                  f"(MMDiTConfig.max_text_tokens); shorten the prompt or lower text.max_tokens")
        return self.context_embedder(tokens.to(dtype)), cond.get("text_mask")

    def _pos(self, gh: int, gw: int) -> Tensor:
        """The position embedding of a gh x gw patch grid: the table itself, or its centre crop (SD3)."""
        G = self.config.pos_embed_max_size or self.config.grid_size
        if (gh, gw) == (G, G):
            return self.pos_embed
        top, left = (G - gh) // 2, (G - gw) // 2
        table = self.pos_embed.reshape(1, G, G, -1)[:, top:top + gh, left:left + gw]
        return table.reshape(1, gh * gw, -1)

    def _rope(self, gh: int, gw: int, text_len: int, device) -> tuple[Tensor, Tensor] | None:
        axes = self.config.rope_axes_dim
        if not axes:
            return None
        rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        image = torch.stack([rows.flatten(), cols.flatten()], dim=1)  # (N, 2)
        if len(axes) == 3:
            image = torch.cat([torch.zeros(gh * gw, 1, dtype=image.dtype), image], dim=1)  # FLUX: (0, row, col)
        positions = torch.cat([image, torch.zeros(text_len, len(axes), dtype=image.dtype)])  # text: position 0
        cos, sin = rope_frequencies(positions, axes, self.config.rope_theta)
        return cos.to(device), sin.to(device)

    def unpatchify(self, x: Tensor, gh: int, gw: int) -> Tensor:
        """(B, N, p p C) tokens -> (B, C, gh p, gw p) image: token (i, j) fills pixels [i p:(i+1) p, j p:(j+1) p]."""
        p, C = self.config.patch_size, self.config.output_channels
        x = x.reshape(x.shape[0], gh, gw, p, p, C)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], C, gh * p, gw * p)

    def _check_input(self, x: Tensor, c_noise: Tensor) -> tuple[Tensor, int, int]:
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise NoisecraftError(f"MMDiT input x: expected shape (B, {cfg.in_channels}, H, W), got {tuple(x.shape)} "
                                  f"(set MMDiTConfig.in_channels to the data)")
        H, W = x.shape[2:]
        p = cfg.patch_size
        if H % p or W % p:
            raise NoisecraftError(f"MMDiT input x: image size {H}x{W} is not divisible by the patch size {p}; "
                                  f"allowed: sides that are multiples of {p}")
        gh, gw = H // p, W // p
        if cfg.pos_embed != "none":
            G = cfg.pos_embed_max_size or cfg.grid_size
            ok = gh <= G and gw <= G if cfg.pos_embed_max_size else (gh, gw) == (G, G)
            if not ok:
                allowed = (f"sides up to {G * p} (pos_embed_max_size {G} patches)" if cfg.pos_embed_max_size
                           else f"{cfg.input_size}x{cfg.input_size} (input_size; pos_embed_max_size or "
                                f"pos_embed='none' with RoPE take other sizes)")
                raise NoisecraftError(f"MMDiT input x: image size {H}x{W} is outside the position embedding; "
                                      f"allowed: {allowed}")
        c_noise = torch.as_tensor(c_noise, device=x.device)
        if c_noise.ndim == 0:
            c_noise = c_noise.expand(x.shape[0])
        if c_noise.shape != (x.shape[0],):
            raise NoisecraftError(f"MMDiT c_noise: expected shape ({x.shape[0]},), got {tuple(c_noise.shape)}")
        return c_noise, gh, gw


__all__ = ["MMDIT_POS_EMBEDS", "MMDIT_PRESETS", "MMDiT", "MMDiTBlock", "MMDiTConfig", "apply_rope",
           "rope_frequencies", "sd3_sincos_pos_embed"]
