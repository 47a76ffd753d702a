"""Denoiser networks: a plain dict registry from a model kind to its (config class, module class).

Every network config class has the same small interface, so no caller branches on the model kind:

    config.for_data(shape)     the config with its input widths set from a data sample's shape (C, *S) or (D,)
    config.data_shape(side)    the shape of one sample; `side()` (the data's spatial size) is called only by
                               configs that do not hold it (the U-Net)
    config.cond_spec           the conditioning it accepts (`noisecraft.models.conditioning.CondSpec`)
"""

from __future__ import annotations

from torch import nn

from noisecraft.config import from_dict
from noisecraft.errors import ConfigError, unknown_name
from noisecraft.models.conditioning import TokenRefinerConfig
from noisecraft.models.dit import DIT_PRESETS, DiT, DiTConfig
from noisecraft.models.egnn import EGNN, EGNNConfig
from noisecraft.models.mlp import MLP_PRESETS, MLPConfig, MLPDenoiserNet
from noisecraft.models.mmdit import MMDIT_PRESETS, MMDiT, MMDiTConfig
from noisecraft.models.point_transformer import PointTransformer, PointTransformerConfig
from noisecraft.models.unet import UNET_PRESETS, UNet, UNetConfig
from noisecraft.models.video_dit import VideoDiT, VideoDiTConfig
from noisecraft.models.video_unet import VideoUNet, VideoUNetConfig

MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    "unet": (UNetConfig, UNet),
    "mlp": (MLPConfig, MLPDenoiserNet),
    "dit": (DiTConfig, DiT),
    "mmdit": (MMDiTConfig, MMDiT),  # joint text-image transformer (SD3 / FLUX-style MMDiT)
    "video-unet": (VideoUNetConfig, VideoUNet),  # clips (C, T, H, W): factorised space-time U-Net
    "video-dit": (VideoDiTConfig, VideoDiT),  # clips (C, T, S, S): DiT over spatio-temporal patches
    # point clouds (3, N): permutation-equivariant transformer over the points (noisecraft.models.point_transformer)
    "point-transformer": (PointTransformerConfig, PointTransformer),
    "egnn": (EGNNConfig, EGNN),  # molecules (3 + K, N): E(n)-equivariant graph network (noisecraft.models.egnn)
}
DEFAULT_MODEL = "unet"


def network_configs() -> dict[str, type]:
    """Model kind -> its config class (what a run config's `network` section is built as)."""
    return {kind: config_cls for kind, (config_cls, _) in MODELS.items()}


def build_model(kind: str, config=None) -> nn.Module:
    """Build the model `kind` from its config dataclass, a dict of its fields, or None (defaults)."""
    if kind not in MODELS:
        raise unknown_name("model", kind, MODELS)
    config_cls, model_cls = MODELS[kind]
    if config is None:
        config = config_cls()
    elif isinstance(config, dict):
        config = from_dict(config_cls, config)
    elif not isinstance(config, config_cls):
        raise ConfigError(f"model {kind!r} needs a {config_cls.__name__} or a dict, got {type(config).__name__}")
    return model_cls(config)


__all__ = [
    "DEFAULT_MODEL", "DIT_PRESETS", "DiT", "DiTConfig", "MLP_PRESETS", "MLPConfig", "MLPDenoiserNet", "MMDIT_PRESETS",
    "MMDiT", "MMDiTConfig", "MODELS",
    "TokenRefinerConfig", "UNET_PRESETS", "UNet", "UNetConfig", "build_model", "network_configs",
]
