"""Denoiser networks: a plain dict registry from a model kind to its (config class, module class)."""

from __future__ import annotations

from torch import nn

from noisecraft.config import from_dict
from noisecraft.errors import ConfigError, unknown_name
from noisecraft.models.dit import DIT_PRESETS, DiT, DiTConfig
from noisecraft.models.mlp import MLP_PRESETS, MLPConfig, MLPDenoiserNet
from noisecraft.models.unet import UNET_PRESETS, UNet, UNetConfig

MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    "unet": (UNetConfig, UNet),
    "mlp": (MLPConfig, MLPDenoiserNet),
    "dit": (DiTConfig, DiT),
}


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
    "DIT_PRESETS", "DiT", "DiTConfig", "MLP_PRESETS", "MLPConfig", "MLPDenoiserNet", "MODELS", "UNET_PRESETS",
    "UNet", "UNetConfig", "build_model",
]
