"""A permutation-equivariant transformer denoiser over point clouds (model "point-transformer").

Point-E style (Nichol et al. 2022, "Point-E", Sec. 4.2: a transformer over the points with no positional
encoding, each point one token), with DiT's adaLN-Zero blocks for the conditioning (Peebles & Xie 2023, Sec. 3.2):

    x (B, C, N) --per-point Linear--> tokens (B, N, h)            no position embedding: the points are a set
    c = MLP(sinusoid(c_noise)) + class embedding (+ Linear(text_pooled) + Linear(vector))      (B, h)
    `depth` blocks (adaLN-Zero, as DiT's):
        (shift1, scale1, gate1, shift2, scale2, gate2) = Linear(SiLU(c)), Linear zero-initialised
        x = x + gate1 * SelfAttn(LN(x) (1 + scale1) + shift1)              over the N points
        x = x + CrossAttn(LN(x), text_tokens, text_mask)                     only with context_dim > 0
        x = x + gate2 * MLP(LN(x) (1 + scale2) + shift2)
    final layer: adaLN LayerNorm and a per-point Linear (zero-initialised) -> (B, C_out, N)

Every layer acts on each token alone except self-attention, which is equivariant to permutations of its tokens
(softmax(Q K^T) V with Q, K, V per token), and the conditioning is the same for every point, so the network is
permutation-equivariant: F(x P) = F(x) P for every permutation matrix P of the N columns
(tests/points/test_transformer.py). cond["concat"] (B, C_cat, N), per-point channels, is embedded by a bias-free
per-point Linear added to that of x (the embedding of [x, c]). The output is exactly 0 at initialisation.
Shapes: B batch, C point channels (3: x, y, z), N points, h hidden width.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import SimpleNamespace

import torch
from torch import Tensor, nn

from noisecraft.errors import ConfigError, NoisecraftError, require
from noisecraft.models.conditioning import (
    CondEmbedding,
    CondSpec,
    TokenRefinerConfig,
    build_refiner,
    check_cond,
    null_labels,
    refined_context,
)
from noisecraft.models.dit import DiTBlock, modulate
from noisecraft.models.unet import timestep_embedding


@dataclass(frozen=True)
class PointTransformerConfig:
    """Hyper-parameters of `PointTransformer`; every field is validated in `__post_init__`."""

    in_channels: int = 3  # rows of one cloud: x, y, z
    n_points: int = 128  # columns N (set from the data)
    hidden_size: int = 128  # token width h, divisible by num_heads
    depth: int = 4  # transformer blocks
    num_heads: int = 4  # attention heads
    mlp_ratio: float = 4.0  # MLP width = mlp_ratio * hidden_size
    freq_dim: int = 256  # width of the sinusoidal noise-level embedding
    num_classes: int = 0  # >0: class embedding; label num_classes = null label (classifier-free guidance)
    context_dim: int = 0  # >0: width of cond["text_tokens"]; cross-attention in every block
    pooled_dim: int = 0  # >0: width of cond["text_pooled"], added to c through a Linear
    vector_dim: int = 0  # >0: width of cond["vector"], added to c through a Linear
    concat_channels: int = 0  # >0: per-point channels of cond["concat"] (B, C_cat, N)
    refiner: TokenRefinerConfig = field(default_factory=TokenRefinerConfig)  # n-gram block over the text tokens

    def __post_init__(self) -> None:
        optional = ("num_classes", "context_dim", "pooled_dim", "vector_dim", "concat_channels")
        for name in ("in_channels", "n_points", "hidden_size", "depth", "num_heads", "freq_dim", *optional):
            value = getattr(self, name)
            low = 0 if name in optional else 1
            require(isinstance(value, int) and not isinstance(value, bool) and value >= low,
                    f"PointTransformerConfig.{name}", f"must be an integer >= {low}, got {value!r}")
        require(isinstance(self.mlp_ratio, int | float) and not isinstance(self.mlp_ratio, bool)
                and self.mlp_ratio > 0, "PointTransformerConfig.mlp_ratio", f"must be a number > 0, got "
                f"{self.mlp_ratio!r}")
        require(self.hidden_size % self.num_heads == 0, "PointTransformerConfig.num_heads",
                f"{self.num_heads} must divide hidden_size {self.hidden_size}")
        require(self.freq_dim % 2 == 0, "PointTransformerConfig.freq_dim", f"must be even, got {self.freq_dim}")
        require(isinstance(self.refiner, TokenRefinerConfig), "PointTransformerConfig.refiner",
                f"expected a TokenRefinerConfig, got {type(self.refiner).__name__}")

    @property
    def cond_spec(self) -> CondSpec:
        return CondSpec(self.num_classes, self.context_dim, self.pooled_dim, self.vector_dim, self.concat_channels)

    def for_data(self, shape: tuple[int, ...]) -> PointTransformerConfig:
        """This config with in_channels and n_points from a cloud's shape (C, N)."""
        if len(shape) != 2:
            raise ConfigError(f"the point-transformer network takes point clouds (C, N); the data samples have "
                              f"shape {tuple(shape)} (use dataset 'shapes-points')")
        return replace(self, in_channels=int(shape[0]), n_points=int(shape[1]))

    def data_shape(self, side=None) -> tuple[int, ...]:
        """(in_channels, n_points) (`side` is not called)."""
        return (self.in_channels, self.n_points)


_LN_EPS = 1e-6


class PointBlock(DiTBlock):
    """One adaLN-Zero block (module docstring): DiT's block on the point tokens (no QK-norm, no token-grid conv;
    its self-attention has no position term, so it commutes with permutations of the points)."""

    def __init__(self, cfg: PointTransformerConfig) -> None:
        super().__init__(_block_fields(cfg))


def _block_fields(cfg: PointTransformerConfig):
    """The fields DiTBlock reads, from a PointTransformerConfig (the options the point transformer does not have
    are off)."""
    return SimpleNamespace(hidden_size=cfg.hidden_size, num_heads=cfg.num_heads, qk_norm=False,
                           context_dim=cfg.context_dim, refiner=cfg.refiner, mlp_ratio=cfg.mlp_ratio,
                           mlp_conv=False, grid_size=None)


class PointFinalLayer(nn.Module):
    """adaLN-modulated LayerNorm and a per-point Linear to the C output channels."""

    def __init__(self, cfg: PointTransformerConfig) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.norm = nn.LayerNorm(h, elementwise_affine=False, eps=_LN_EPS)
        self.linear = nn.Linear(h, cfg.in_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(h, 2 * h))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))


class PointTransformer(nn.Module):
    """The denoiser network F(x, c_noise, cond) on clouds x (B, C, N) (module docstring)."""

    def __init__(self, config: PointTransformerConfig) -> None:
        super().__init__()
        if not isinstance(config, PointTransformerConfig):
            raise ConfigError(f"PointTransformer expects a PointTransformerConfig, got {type(config).__name__}")
        self.config = cfg = config
        h = cfg.hidden_size
        self.embed = nn.Linear(cfg.in_channels, h)
        self.concat_in = nn.Linear(cfg.concat_channels, h, bias=False) if cfg.concat_channels else None
        self.t_embedder = nn.Sequential(nn.Linear(cfg.freq_dim, h), nn.SiLU(), nn.Linear(h, h))
        self.y_embedder = nn.Embedding(cfg.num_classes + 1, h) if cfg.num_classes > 0 else None
        self.cond_emb = CondEmbedding(cfg.cond_spec, h)
        self.refiner = build_refiner(cfg, h)
        self.blocks = nn.ModuleList(PointBlock(cfg) for _ in range(cfg.depth))
        self.final_layer = PointFinalLayer(cfg)
        self._init_weights()

    def _init_weights(self) -> None:
        """DiT's initialisation: Xavier-uniform Linear layers, N(0, 0.02) time MLP and class table, adaLN
        modulations, cross-attention outputs and the output layer at zero."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for layer in (self.t_embedder[0], self.t_embedder[2]):
            nn.init.normal_(layer.weight, std=0.02)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.weight, std=0.02)
        zeroed = [b.adaLN_modulation[-1] for b in self.blocks] + [self.final_layer.adaLN_modulation[-1]]
        zeroed += [b.cross.proj for b in self.blocks if b.cross is not None] + [self.final_layer.linear]
        zeroed += self.refiner.zeroed() if self.refiner is not None else []
        for m in zeroed:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, c_noise: Tensor, cond: dict | None = None) -> Tensor:
        cfg = self.config
        if x.ndim != 3 or x.shape[1] != cfg.in_channels:
            raise NoisecraftError(f"point-transformer input x: expected (B, {cfg.in_channels}, N) point clouds, "
                                  f"got {tuple(x.shape)}")
        B = x.shape[0]
        c_noise = torch.as_tensor(c_noise, device=x.device)
        if c_noise.ndim == 0:
            c_noise = c_noise.expand(B)
        if c_noise.shape != (B,):
            raise NoisecraftError(f"point-transformer c_noise: expected shape ({B},), got {tuple(c_noise.shape)}")
        cond = check_cond(cond, B, cfg.cond_spec, "point-transformer", spatial=x.shape[2:])
        dtype = self.embed.weight.dtype
        tokens = self.embed(x.transpose(1, 2).to(dtype))  # (B, N, h)
        if cond.get("concat") is not None:
            tokens = tokens + self.concat_in(cond["concat"].transpose(1, 2).to(dtype))
        context, pooled = refined_context(self.refiner, cond)
        c = self.t_embedder(timestep_embedding(c_noise, cfg.freq_dim).to(dtype))  # (B, h)
        if self.y_embedder is not None:
            c = c + self.y_embedder(null_labels(cond.get("class_labels"), B, cfg.num_classes, c.device))
        c = c + self.cond_emb(cond, dtype) + pooled
        for block in self.blocks:
            tokens = block(tokens, c, context)
        return self.final_layer(tokens, c).transpose(1, 2)  # (B, C, N)


POINT_TRANSFORMER_PRESETS: dict[str, PointTransformerConfig] = {
    "tiny": PointTransformerConfig(hidden_size=32, depth=2, num_heads=2, freq_dim=32),
    "shapes": PointTransformerConfig(hidden_size=128, depth=4, num_heads=4),
}


__all__ = ["POINT_TRANSFORMER_PRESETS", "PointBlock", "PointTransformer", "PointTransformerConfig"]
