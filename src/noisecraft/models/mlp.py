"""A residual MLP denoiser network for low-dimensional toy data (2-D mixtures, swiss roll, ...).

The timestep conditioning follows Ho et al. 2020 (sinusoidal embedding + 2-layer MLP, added inside
every residual block); the residual pre-activation blocks follow He et al. 2016, "Identity Mappings
in Deep Residual Networks". Shapes: B batch, D data dimension, H hidden width, E embedding width.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from noisecraft.errors import ConfigError, NoisecraftError, require
from noisecraft.models.conditioning import CondSpec
from noisecraft.models.unet import timestep_embedding


@dataclass(frozen=True)
class MLPConfig:
    """Hyper-parameters of `MLPDenoiserNet`; every field is validated in `__post_init__`."""

    data_dim: int = 2  # dimension D of a data point x (B, D)
    hidden: int = 128  # hidden width H of the residual blocks
    num_blocks: int = 3  # number of residual blocks
    embed_dim: int = 64  # width E of the sinusoidal time embedding and its MLP
    num_classes: int = 0  # >0: class embedding added to the time embedding; label num_classes = "null"
    dropout: float = 0.0  # dropout probability inside residual blocks, in [0, 1)

    def __post_init__(self) -> None:
        for name in ("data_dim", "hidden", "num_blocks", "embed_dim", "num_classes"):
            value = getattr(self, name)
            require(isinstance(value, int) and not isinstance(value, bool), f"MLPConfig.{name}",
                    f"expected an integer, got {value!r}")
            low = 0 if name == "num_classes" else 1
            require(value >= low, f"MLPConfig.{name}", f"must be >= {low}, got {value}")
        require(self.embed_dim % 2 == 0, "MLPConfig.embed_dim", f"must be even (cos/sin pairs), got {self.embed_dim}")
        require(not isinstance(self.dropout, bool) and isinstance(self.dropout, int | float)
                and 0.0 <= self.dropout < 1.0, "MLPConfig.dropout", f"must be a number in [0, 1), got {self.dropout!r}")

    @property
    def cond_spec(self) -> CondSpec:
        """Class labels only: the MLP takes no text, vector or concatenated channels."""
        return CondSpec(num_classes=self.num_classes)

    def for_data(self, shape: tuple[int, ...]) -> MLPConfig:
        """This config with data_dim from a data sample's shape (D,)."""
        if len(shape) != 1:
            raise ConfigError(f"the MLP backbone takes flat vectors (D,); the data samples have shape {tuple(shape)} "
                              f"(use unet or dit for images)")
        return replace(self, data_dim=shape[0])

    def data_shape(self, side=None) -> tuple[int, ...]:
        """(data_dim,) (`side` is not called)."""
        return (self.data_dim,)


MLP_PRESETS: dict[str, MLPConfig] = {
    # ~133k parameters: 2-D toy distributions, trains on a CPU in seconds.
    "toy2d": MLPConfig(),
}


class _ResidualBlock(nn.Module):
    """h + W2 drop(SiLU(W1 SiLU(h) + W_e emb)) (pre-activation residual block, He et al. 2016)."""

    def __init__(self, hidden: int, embed_dim: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb_proj = nn.Linear(embed_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.dropout = dropout

    def forward(self, h: Tensor, emb_act: Tensor) -> Tensor:
        z = F.silu(self.fc1(F.silu(h)) + self.emb_proj(emb_act))  # (B, H)
        return h + self.fc2(F.dropout(z, self.dropout, self.training))


class MLPDenoiserNet(nn.Module):
    """forward(x, c_noise, cond) with x: (B, D), c_noise: (B,) real-valued noise condition,
    cond: optional {"class_labels": (B,) long}. Returns (B, D); the output layer starts at zero.
    The MLP reads no other cond key; cond["concat"] (channels concatenated to x) needs spatial data."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        if not isinstance(config, MLPConfig):
            raise ConfigError(f"MLPDenoiserNet expects an MLPConfig, got {type(config).__name__}")
        self.config = cfg = config
        E = cfg.embed_dim
        self.time_mlp = nn.Sequential(nn.Linear(E, E), nn.SiLU(), nn.Linear(E, E))
        self.class_emb = nn.Embedding(cfg.num_classes + 1, E) if cfg.num_classes > 0 else None
        self.proj_in = nn.Linear(cfg.data_dim, cfg.hidden)
        self.blocks = nn.ModuleList(_ResidualBlock(cfg.hidden, E, cfg.dropout) for _ in range(cfg.num_blocks))
        self.proj_out = nn.Linear(cfg.hidden, cfg.data_dim)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: Tensor, c_noise: Tensor, cond: dict | None = None) -> Tensor:
        B, D = self._check_input(x, c_noise)
        if cond is not None and isinstance(cond, dict) and "concat" in cond:
            raise NoisecraftError("MLPDenoiserNet: cond['concat'] given, but the MLP takes no channels concatenated "
                                  "to x (a spatial input); models with a concat input: unet, dit")
        emb = self.time_mlp(timestep_embedding(torch.as_tensor(c_noise).expand(B), self.config.embed_dim))
        emb = emb + self._class_embedding((cond or {}).get("class_labels"), B, emb.device)  # (B, E)
        emb_act = F.silu(emb.to(x.dtype))
        h = self.proj_in(x)  # (B, H)
        for block in self.blocks:
            h = block(h, emb_act)
        return self.proj_out(F.silu(h))  # (B, D)

    def _class_embedding(self, labels: Tensor | None, batch: int, device) -> Tensor | float:
        if self.class_emb is None:
            if labels is not None:
                raise NoisecraftError("cond['class_labels'] given but MLPConfig.num_classes is 0 (unconditional)")
            return 0.0
        if labels is None:
            labels = torch.full((batch,), self.config.num_classes, dtype=torch.long, device=device)
        if labels.shape != (batch,) or labels.dtype not in (torch.int32, torch.int64):
            raise NoisecraftError(f"cond['class_labels']: expected an integer tensor of shape ({batch},), "
                                  f"got {labels.dtype} {tuple(labels.shape)}")
        return self.class_emb(labels)  # (B, E)

    def _check_input(self, x: Tensor, c_noise: Tensor) -> tuple[int, int]:
        D = self.config.data_dim
        if x.ndim != 2 or x.shape[1] != D:
            raise NoisecraftError(f"MLPDenoiserNet input x: expected shape (B, {D}), got {tuple(x.shape)}")
        c_shape = tuple(torch.as_tensor(c_noise).shape)
        if c_shape not in ((), (x.shape[0],)):
            raise NoisecraftError(f"MLPDenoiserNet c_noise: expected shape ({x.shape[0]},), got {c_shape}")
        return x.shape[0], D
