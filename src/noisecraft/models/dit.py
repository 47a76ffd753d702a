"""Diffusion Transformer (DiT) backbone: Peebles & Xie 2023, "Scalable Diffusion Models with Transformers".

    x (B, C, H, W) --patchify (p x p conv, sec. 3.2)--> tokens (B, N, h) + position embedding
    c = t_emb + y_emb (+ Linear(text_pooled) + Linear(vector))            conditioning vector (B, h)
    N blocks (adaLN-Zero, sec. 3.2 and Fig. 3):
        (shift1, scale1, gate1, shift2, scale2, gate2) = Linear(SiLU(c)), Linear zero-initialised
        x = x + gate1 * SelfAttn(LN(x) (1 + scale1) + shift1)    qk_norm: RMSNorm on q and k per head (as SD3,
                                                             Esser et al. 2024, sec. 5.3.2; ViT-22B)
        x = x + CrossAttn(LN(x), text_tokens, text_mask)     only with context_dim > 0 (as PixArt-alpha,
                                                             Chen et al. 2023, sec. 2.3; proj zero-init);
                                                             refiner.kernel > 0 refines the tokens first
                                                             (`conditioning.TokenRefiner`)
        x = x + gate2 * MLP(LN(x) (1 + scale2) + shift2)      mlp_conv: Mix-FFN, fc2(GELU(DWConv3x3(fc1(.))))
                                                             over the token grid (SegFormer, Xie et al. 2021,
                                                             sec. 3.1, Eq. 3; SANA's Mix-FFN, Xie et al. 2025),
                                                             the conv Dirac-initialised (starts as the MLP)
    final layer: LN(x) (1 + scale) + shift, Linear(h, p p C_out) (both zero-initialised), unpatchify
    long_skip: U-ViT's long skip connections (Bao et al. 2023, "All are Worth Words", sec. 3.1, Fig. 1): the
        outputs of the first n = (depth - 1) // 2 blocks are kept, and each of the last n blocks reads
        Linear(concat[x, skip]) (Linear(2h, h)) instead of x, pairing blocks from the middle outwards as a
        U-Net's levels; the one or two middle blocks have no skip. skip_init "xavier" draws the Linear at random
        like the other Linear layers (U-ViT draws it at random too); "identity" starts it at [I, 0], so that at
        initialisation the network is exactly the DiT without skips and the skip half grows from zero, in the
        spirit of adaLN-Zero's zero gates and ControlNet's zero convolutions (Zhang et al. 2023, sec. 3.1).

Notation (shapes): B batch, C channels, H = W = input_size, p patch size, N = (H / p)^2 tokens,
h = hidden_size, D_ctx context width. With the zero initialisation of the paper (adaLN modulation and
the final linear layer start at 0), every block is the identity and the output is exactly 0 at init.

Class embedding scale (`class_embed_std`): the reference code draws the class table from N(0, 0.02^2), the
time MLP likewise. With the adaLN modulation at zero, the gradient reaching the table is W_mod^T g and the
table's effect on the output is W_mod y: a product of two near-zero factors, which leaves the model almost
unconditional for the first hundreds of steps (the saddle of small / zero initialisation; Saxe et al. 2014 on deep
linear nets). N(0, 1), nn.Embedding's default and the U-Net's, makes c carry the class at unit scale from step
0, so W_mod learns it at once (benchmarks/transformers.md, "DiT vs U-Net", measures both). `time_embed_init`
"xavier" likewise gives the time MLP the Xavier draw of the other Linear layers instead of N(0, 0.02^2).

Position embedding: "sincos" is the fixed 2-D sine-cosine embedding of MAE / DiT (a buffer, not saved in
checkpoints); "learned" is a parameter initialised to the same values. Output: the fixed unpatchify
rearrangement of the paper, or with `out_conv=True` followed by a learned 3x3 convolution (as U-ViT,
Bao et al. 2023) that can smooth patch boundaries; that conv then starts at zero instead of the final linear.

Conditioning follows the contract in `noisecraft.models.conditioning` (class_labels with null label
`num_classes`, text_tokens/text_mask, text_pooled, vector, concat). cond["concat"] (B, C_cat, H, W) is patch-embedded
by a bias-free p x p conv added to the patch embedding of x: exactly the patch embedding of the channel
concatenation [x, c] (whose weight is [W_x, W_c]).
"""

from __future__ import annotations

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
from noisecraft.models.unet import timestep_embedding

POS_EMBEDS = ("sincos", "learned")
SKIP_INITS = ("identity", "xavier")
TIME_EMBED_INITS = ("dit", "xavier")
_LN_EPS = 1e-6  # LayerNorm epsilon of the DiT reference code



@dataclass(frozen=True)
class DiTConfig:
    """Hyper-parameters of `DiT`; every field is validated in `__post_init__`."""

    in_channels: int = 1  # channels of the input x (1 for MNIST, 3 for RGB, 4 for SD latents)
    out_channels: int | None = None  # channels of the output; None -> same as in_channels
    input_size: int = 28  # H = W of the input (the trainer sets it from the data)
    patch_size: int = 4  # p: the input is cut into (H / p)^2 patches of p x p pixels
    hidden_size: int = 192  # token width h; divisible by 4 (2-D sin-cos) and by num_heads
    depth: int = 6  # number of DiT blocks
    num_heads: int = 3  # attention heads
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio * hidden_size
    pos_embed: str = "sincos"  # "sincos" (fixed 2-D sin-cos, as DiT) or "learned" (initialised to sin-cos)
    out_conv: bool = False  # True: a learned 3x3 conv after the unpatchify (U-ViT); False: as DiT
    qk_norm: bool = False  # True: RMSNorm (learned scale) on queries and keys per head (SD3); False: as DiT
    mlp_conv: bool = False  # True: Mix-FFN, a depthwise 3x3 conv in each MLP (SegFormer, SANA); False: as DiT
    long_skip: bool = False  # True: U-ViT long skips from the first (depth-1)//2 blocks to the last; False: as DiT
    skip_init: str = "identity"  # long-skip Linear init: "identity" ([I, 0]: starts as the DiT) or "xavier"
    freq_dim: int = 256  # width of the sinusoidal noise-level embedding fed to the time MLP
    num_classes: int = 0  # >0: class embedding; label num_classes = null label (classifier-free guidance)
    class_embed_std: float = 0.02  # std of the class table's N(0, std^2) init: 0.02 as DiT; 1.0 as nn.Embedding
    time_embed_init: str = "dit"  # time-MLP weights: "dit" (N(0, 0.02^2), the reference) or "xavier" (as the blocks)
    context_dim: int = 0  # >0: width D_ctx of cond["text_tokens"]; cross-attention in every block
    pooled_dim: int = 0  # >0: width of cond["text_pooled"], added to c through a Linear
    vector_dim: int = 0  # >0: width of cond["vector"], added to c through a Linear
    concat_channels: int = 0  # >0: channels of cond["concat"], concatenated to x before the patch embedding
    refiner: TokenRefinerConfig = field(default_factory=TokenRefinerConfig)  # n-gram block over the text tokens

    def __post_init__(self) -> None:
        optional = ("num_classes", "context_dim", "pooled_dim", "vector_dim", "concat_channels")  # 0 = off
        for name in ("in_channels", "input_size", "patch_size", "hidden_size", "depth", "num_heads", "freq_dim",
                     *optional):
            value = getattr(self, name)
            require(isinstance(value, int) and not isinstance(value, bool), f"DiTConfig.{name}",
                    f"expected an integer, got {value!r}")
            low = 0 if name in optional else 1
            require(value >= low, f"DiTConfig.{name}", f"must be >= {low}, got {value}")
        require(self.out_channels is None or (isinstance(self.out_channels, int) and self.out_channels >= 1),
                "DiTConfig.out_channels", f"expected an integer >= 1 or None, got {self.out_channels!r}")
        require(isinstance(self.mlp_ratio, int | float) and not isinstance(self.mlp_ratio, bool)
                and self.mlp_ratio > 0, "DiTConfig.mlp_ratio", f"must be a number > 0, got {self.mlp_ratio!r}")
        require(isinstance(self.out_conv, bool), "DiTConfig.out_conv", f"expected true or false, got {self.out_conv!r}")
        require(isinstance(self.qk_norm, bool), "DiTConfig.qk_norm", f"expected true or false, got {self.qk_norm!r}")
        require(isinstance(self.class_embed_std, int | float) and not isinstance(self.class_embed_std, bool)
                and self.class_embed_std > 0, "DiTConfig.class_embed_std",
                f"must be a number > 0, got {self.class_embed_std!r}")
        require(isinstance(self.mlp_conv, bool), "DiTConfig.mlp_conv", f"expected true or false, got {self.mlp_conv!r}")
        require(isinstance(self.long_skip, bool), "DiTConfig.long_skip",
                f"expected true or false, got {self.long_skip!r}")
        if self.time_embed_init not in TIME_EMBED_INITS:
            raise ConfigError(f"DiTConfig.time_embed_init: unknown initialisation {self.time_embed_init!r}; "
                              f"allowed: {', '.join(TIME_EMBED_INITS)}")
        if self.skip_init not in SKIP_INITS:
            raise ConfigError(f"DiTConfig.skip_init: unknown long-skip initialisation {self.skip_init!r}; "
                              f"allowed: {', '.join(SKIP_INITS)}")
        if self.pos_embed not in POS_EMBEDS:
            raise ConfigError(f"DiTConfig.pos_embed: unknown position embedding {self.pos_embed!r}; "
                              f"allowed: {', '.join(POS_EMBEDS)}")
        require(self.input_size % self.patch_size == 0, "DiTConfig.patch_size",
                f"{self.patch_size} must divide input_size {self.input_size}")
        require(self.hidden_size % 4 == 0, "DiTConfig.hidden_size", f"must be divisible by 4 (2-D sin-cos), got "
                f"{self.hidden_size}")
        require(self.hidden_size % self.num_heads == 0, "DiTConfig.num_heads",
                f"{self.num_heads} must divide hidden_size {self.hidden_size}")
        require(self.freq_dim % 2 == 0, "DiTConfig.freq_dim", f"must be even (cos/sin pairs), got {self.freq_dim}")
        require(isinstance(self.refiner, TokenRefinerConfig), "DiTConfig.refiner",
                f"expected a TokenRefinerConfig, got {type(self.refiner).__name__}")

    @property
    def output_channels(self) -> int:
        return self.in_channels if self.out_channels is None else self.out_channels

    @property
    def num_long_skips(self) -> int:
        """Long skip connections of the U-ViT layout: (depth - 1) // 2 with long_skip, else 0."""
        return (self.depth - 1) // 2 if self.long_skip else 0

    @property
    def grid_size(self) -> int:
        return self.input_size // self.patch_size

    @property
    def cond_spec(self) -> CondSpec:
        return CondSpec(self.num_classes, self.context_dim, self.pooled_dim, self.vector_dim, self.concat_channels)

    def for_data(self, shape: tuple[int, ...]) -> DiTConfig:
        """This config with in_channels and input_size from a data sample's shape (C, S, S) (square images)."""
        if len(shape) != 3 or shape[1] != shape[2]:
            raise ConfigError(f"the DiT backbone needs square images (C, S, S); the data has shape {tuple(shape)}")
        return replace(self, in_channels=shape[0], input_size=shape[1])

    def data_shape(self, side=None) -> tuple[int, ...]:
        """(in_channels, input_size, input_size); the DiT's size is in its config (`side` is not called)."""
        return (self.in_channels, self.input_size, self.input_size)


# The four model sizes of Peebles & Xie 2023, Table 1 (hidden size, depth, heads).
_DIT_SIZES = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16)}

DIT_PRESETS: dict[str, DiTConfig] = {
    # ~50k parameters: unit tests and smoke runs (8x8 or 28x28 inputs, 4x4 patches).
    "tiny": DiTConfig(patch_size=4, hidden_size=32, depth=2, num_heads=2),
    # ~4.2M parameters: 28x28 MNIST with 4x4 patches (49 tokens); trains on a CPU.
    "mnist": DiTConfig(in_channels=1, input_size=28, patch_size=4, hidden_size=192, depth=6, num_heads=3),  # = defaults
    # The paper's models on 32x32x4 Stable Diffusion latents (256x256 images), patch sizes 2, 4, 8:
    # "DiT-S/2" (33M parameters with num_classes=1000 and out_channels=8, as in the paper) ... "DiT-XL/2" (675M).
    **{f"DiT-{name}/{p}": DiTConfig(in_channels=4, input_size=32, patch_size=p, hidden_size=h, depth=d,
                                     num_heads=heads)
       for name, (h, d, heads) in _DIT_SIZES.items() for p in (2, 4, 8)},
}


def sincos_pos_embed_2d(dim: int, grid_size: int) -> Tensor:
    """The fixed 2-D sine-cosine position embedding of MAE (He et al. 2022) and DiT, (N, dim) float64 with
    N = grid_size^2 tokens in row-major (row, column) order. Half the channels encode the column and half
    the row, each as [sin(pos w_i), cos(pos w_i)] with w_i = 10000^(-i / (dim / 4)), i < dim / 4 (as the
    reference code, whose meshgrid puts the column coordinate first)."""
    pos = torch.arange(grid_size, dtype=torch.float64)
    row, col = torch.meshgrid(pos, pos, indexing="ij")  # (g, g) each

    def embed_1d(coord: Tensor) -> Tensor:
        omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))  # (dim/4,)
        out = coord.reshape(-1, 1) * omega  # (N, dim/4)
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)  # (N, dim/2)

    return torch.cat([embed_1d(col), embed_1d(row)], dim=1)  # (N, dim)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: x (1 + scale) + shift, with (B, h) shift/scale broadcast over the N tokens of x (B, N, h)."""
    return x * (1 + scale[:, None]) + shift[:, None]


class SelfAttention(nn.Module):
    """Multi-head self-attention over tokens: W_o softmax(Q K^T / sqrt(d)) V, [Q, K, V] = W_qkv x; with qk_norm,
    Q and K are RMS-normalised per head (learned scale) first (Esser et al. 2024, sec. 5.3.2)."""

    def __init__(self, hidden: int, heads: int, qk_norm: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        d = hidden // heads
        self.norm_q = nn.RMSNorm(d, eps=_LN_EPS) if qk_norm else None
        self.norm_k = nn.RMSNorm(d, eps=_LN_EPS) if qk_norm else None

    def forward(self, x: Tensor) -> Tensor:
        B, N, h = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)  # (B, heads, N, d)
        if self.norm_q is not None:
            q, k = self.norm_q(q), self.norm_k(k)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d)
        return self.proj(out.transpose(1, 2).reshape(B, N, h))  # (B, N, h)


class DiTBlock(nn.Module):
    """One adaLN-Zero transformer block (Peebles & Xie 2023, sec. 3.2, Fig. 3), optionally with
    cross-attention to text tokens between self-attention and MLP."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.norm1 = nn.LayerNorm(h, elementwise_affine=False, eps=_LN_EPS)
        self.attn = SelfAttention(h, cfg.num_heads, cfg.qk_norm)
        if cfg.context_dim:
            self.norm_cross = nn.LayerNorm(h, eps=_LN_EPS)
            self.cross = CrossAttention(h, context_width(cfg), cfg.num_heads)
        else:
            self.cross = None
        self.norm2 = nn.LayerNorm(h, elementwise_affine=False, eps=_LN_EPS)
        hidden = int(h * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(h, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, h))
        self.mlp_dw, self.grid = None, cfg.grid_size
        if cfg.mlp_conv:  # Mix-FFN: a depthwise 3x3 conv over the token grid after mlp.0 (made RNG-neutrally)
            with torch.random.fork_rng(devices=[]):
                self.mlp_dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(h, 6 * h))

    def forward(self, x: Tensor, c: Tensor, context=None) -> Tensor:
        """x: (B, N, h) tokens, c: (B, h) conditioning, context: (tokens, mask) or None -> (B, N, h)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=1)  # (B, h) each
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))
        if self.cross is not None and context is not None:
            x = x + self.cross(self.norm_cross(x), *context)
        return x + gate2[:, None] * self._mlp(modulate(self.norm2(x), shift2, scale2))

    def _mlp(self, x: Tensor) -> Tensor:
        """mlp.2(GELU(mlp.0(x))), with mlp_conv mlp.2(GELU(DWConv3x3(mlp.0(x)))) on the (grid x grid) tokens."""
        if self.mlp_dw is None:
            return self.mlp(x)
        u = self.mlp[0](x)  # (B, N, mlp hidden)
        B, N, H = u.shape
        u = self.mlp_dw(u.transpose(1, 2).reshape(B, H, self.grid, self.grid)).flatten(2).transpose(1, 2)
        return self.mlp[2](self.mlp[1](u))


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm and a Linear to p * p * C_out values per token (DiT's final layer)."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        h, p = cfg.hidden_size, cfg.patch_size
        self.norm = nn.LayerNorm(h, elementwise_affine=False, eps=_LN_EPS)
        self.linear = nn.Linear(h, p * p * cfg.output_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(h, 2 * h))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, N, p p C_out)


class DiT(nn.Module):
    """Diffusion Transformer: forward(x, c_noise, cond) with x: (B, in_channels, input_size, input_size),
    c_noise: (B,) real-valued noise condition, cond: None or a conditioning dict. Returns
    (B, out_channels, input_size, input_size), exactly 0 at initialisation (adaLN-Zero)."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        if not isinstance(config, DiTConfig):
            raise ConfigError(f"DiT expects a DiTConfig, got {type(config).__name__}")
        self.config = cfg = config
        h = cfg.hidden_size
        self.x_embedder = nn.Conv2d(cfg.in_channels, h, cfg.patch_size, stride=cfg.patch_size)
        # cond["concat"]: W_c of the patch embedding of [x, c] (bias-free: the bias is x_embedder's)
        self.concat_in = (nn.Conv2d(cfg.concat_channels, h, cfg.patch_size, stride=cfg.patch_size, bias=False)
                          if cfg.concat_channels else None)
        self._build_trunk(cfg, sincos_pos_embed_2d(h, cfg.grid_size).float()[None])  # pos: (1, N, h)
        c_out = cfg.output_channels
        self.out_conv = nn.Conv2d(c_out, c_out, 3, padding=1) if cfg.out_conv else None
        self._init_weights()

    def _build_trunk(self, cfg, pos: Tensor) -> None:
        """The layers after the patch embedding, in registration order (which fixes the initialisation and the
        optimizer's parameter order; VideoDiT shares it): the position table `pos` (learned or fixed), time,
        class and condition embeddings, the text refiner, the blocks and the final layer."""
        h = cfg.hidden_size
        if cfg.pos_embed == "learned":
            self.pos_embed = nn.Parameter(pos)
        else:
            self.register_buffer("pos_embed", pos, persistent=False)
        self.t_embedder = nn.Sequential(nn.Linear(cfg.freq_dim, h), nn.SiLU(), nn.Linear(h, h))
        self.y_embedder = nn.Embedding(cfg.num_classes + 1, h) if cfg.num_classes > 0 else None
        self.cond_emb = CondEmbedding(cfg.cond_spec, h)
        self.refiner = build_refiner(cfg, h)  # trainable n-gram/transformer layers over the text tokens, or None
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.depth))
        self.final_layer = FinalLayer(cfg)
        # long_skip (U-ViT): Linear(2h, h) over [tokens, skip] before each of the last (depth - 1) // 2 blocks;
        # made without drawing from the global RNG (and drawn last in _init_weights), so that every other weight
        # of a seeded model is the one it has without skips
        self.skip_linears = None
        if cfg.num_long_skips:
            with torch.random.fork_rng(devices=[]):
                self.skip_linears = nn.ModuleList(nn.Linear(2 * h, h) for _ in range(cfg.num_long_skips))

    def _init_weights(self) -> None:
        """As the DiT reference code: Xavier-uniform Linear layers with zero bias, the patch embedding as a
        Linear, N(0, 0.02) time MLP and class table, then adaLN modulation and the output layer at zero."""
        skips = [] if self.skip_linears is None else list(self.skip_linears)
        for m in self.modules():
            if isinstance(m, nn.Linear) and not any(m is lin for lin in skips):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.x_embedder.weight
        if self.concat_in is None:
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        else:  # [W_x, W_c] initialised as the one patch embedding of [x, c]
            joint = torch.cat([w, self.concat_in.weight], dim=1)  # (h, C + C_cat, p, p)
            nn.init.xavier_uniform_(joint.view(joint.shape[0], -1))
            with torch.no_grad():
                w.copy_(joint[:, :w.shape[1]])
                self.concat_in.weight.copy_(joint[:, w.shape[1]:])
        nn.init.zeros_(self.x_embedder.bias)
        for layer in (self.t_embedder[0], self.t_embedder[2]):
            reference = torch.empty_like(layer.weight).normal_(std=0.02)  # drawn either way: same later draws
            if self.config.time_embed_init == "dit":  # "xavier": keep the draw of the loop above
                with torch.no_grad():
                    layer.weight.copy_(reference)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.weight, std=self.config.class_embed_std)
        for lin in skips:  # last: "identity" [I, 0] (tokens through, skip half at zero), or Xavier
            nn.init.zeros_(lin.bias)
            if self.config.skip_init == "xavier":
                nn.init.xavier_uniform_(lin.weight)
            else:
                with torch.no_grad():
                    lin.weight.zero_()
                    lin.weight[:, :self.config.hidden_size].copy_(torch.eye(self.config.hidden_size))
        for block in self.blocks:  # Mix-FFN conv: the identity (Dirac) at first, so the MLP starts as DiT's
            if block.mlp_dw is not None:
                nn.init.dirac_(block.mlp_dw.weight, groups=block.mlp_dw.groups)
                nn.init.zeros_(block.mlp_dw.bias)
        zeroed = [b.adaLN_modulation[-1] for b in self.blocks] + [self.final_layer.adaLN_modulation[-1]]
        zeroed += [b.cross.proj for b in self.blocks if b.cross is not None]
        zeroed.append(self.out_conv if self.out_conv is not None else self.final_layer.linear)
        zeroed += self.refiner.zeroed() if self.refiner is not None else []
        for m in zeroed:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, c_noise: Tensor, cond: dict | None = None) -> Tensor:
        c_noise = self._check_input(x, c_noise)
        B = x.shape[0]
        cond = check_cond(cond, B, self.config.cond_spec, "DiT", spatial=x.shape[2:])
        patches = self.x_embedder(x)  # (B, h, H / p, W / p)
        if cond.get("concat") is not None:
            patches = patches + self.concat_in(cond["concat"].to(patches.dtype))  # = patch-embedding [x, c]
        tokens = patches.flatten(2).transpose(1, 2) + self.pos_embed  # (B, N, h)
        context, pooled = refined_context(self.refiner, cond)  # (tokens (B, T, D), mask) or None; (B, h) or 0
        c = self._embed(c_noise, cond, B) + pooled  # (B, h)
        tokens = self._run_blocks(tokens, c, context)
        out = self.unpatchify(self.final_layer(tokens, c))  # (B, C_out, H, W)
        return out if self.out_conv is None else self.out_conv(out)

    def _run_blocks(self, tokens: Tensor, c: Tensor, context) -> Tensor:
        """The blocks over tokens (B, N, h). With long skips (U-ViT, Bao et al. 2023, sec. 3.1 and Fig. 1), the
        outputs of the first n = (depth - 1) // 2 blocks are kept and block depth - n + j (j < n) reads
        Linear([tokens, output of block n - 1 - j]) instead of tokens (innermost pairs first, as a U-Net)."""
        if self.skip_linears is None:
            for block in self.blocks:
                tokens = block(tokens, c, context)
            return tokens
        n, depth, skips = len(self.skip_linears), len(self.blocks), []
        for i, block in enumerate(self.blocks):
            if i >= depth - n:
                tokens = self.skip_linears[i - (depth - n)](torch.cat([tokens, skips.pop()], dim=-1))
            tokens = block(tokens, c, context)
            if i < n:
                skips.append(tokens)
        return tokens

    def _embed(self, c_noise: Tensor, cond: dict, batch: int) -> Tensor:
        """c = MLP(sinusoid(c_noise)) + class embedding (null label when absent) + pooled/vector projections."""
        dtype = self.x_embedder.weight.dtype
        c = self.t_embedder(timestep_embedding(c_noise, self.config.freq_dim).to(dtype))  # (B, h)
        if self.y_embedder is not None:
            c = c + self.y_embedder(null_labels(cond.get("class_labels"), batch, self.config.num_classes,
                                                c.device))
        return c + self.cond_emb(cond, dtype)

    def unpatchify(self, x: Tensor) -> Tensor:
        """(B, N, p p C) tokens -> (B, C, H, W) image: token (i, j) fills pixels [i p:(i+1) p, j p:(j+1) p]."""
        cfg = self.config
        g, p, C = cfg.grid_size, cfg.patch_size, cfg.output_channels
        x = x.reshape(x.shape[0], g, g, p, p, C)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], C, g * p, g * p)

    def _check_input(self, x: Tensor, c_noise: Tensor) -> Tensor:
        cfg = self.config
        expected = (cfg.in_channels, cfg.input_size, cfg.input_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise NoisecraftError(f"DiT input x: expected shape (B, {', '.join(map(str, expected))}), got "
                                  f"{tuple(x.shape)} (set DiTConfig.input_size / in_channels to the data)")
        c_noise = torch.as_tensor(c_noise, device=x.device)
        if c_noise.ndim == 0:
            c_noise = c_noise.expand(x.shape[0])
        if c_noise.shape != (x.shape[0],):
            raise NoisecraftError(f"DiT c_noise: expected shape ({x.shape[0]},), got {tuple(c_noise.shape)}")
        return c_noise


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["DIT_PRESETS", "DiT", "DiTBlock", "DiTConfig", "POS_EMBEDS", "SKIP_INITS", "TIME_EMBED_INITS",
           "count_parameters", "modulate", "sincos_pos_embed_2d"]
