"""Network and denoiser construction from a run config: the one place a run's modules are built.

    config = adapt_config(config, data_shape)   # the data and the conditions set the network's input widths
    denoiser = build_denoiser(config)            # network (+ the conditions' wrappers) + schedule + prediction

Training, sampling, evaluation and interop all build through here, so none of them imports another.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from noisecraft.core.denoiser import Denoiser
from noisecraft.core.prediction import Prediction
from noisecraft.schedules.training import build_schedule


def adapt_network_to_data(config, data_shape: tuple):
    """Set the network's input channels / data dim from the data (the data is the source of truth)."""
    if config.model == "unet":
        return replace(config, unet=replace(config.unet, in_channels=data_shape[0]))
    if config.model == "dit":
        from noisecraft.models.dit import dit_for_data

        return replace(config, dit=dit_for_data(config.dit, data_shape))
    return replace(config, mlp=replace(config.mlp, data_dim=data_shape[0]))


def adapt_config(config, data_shape: tuple):
    """The run config with the network's input widths set from the data and from the run's conditions."""
    from noisecraft.training.conditioning import adapt_network_to_text

    return adapt_network_to_text(adapt_network_to_data(config, data_shape))


def build_network(config) -> torch.nn.Module:
    """The network of a run config, wrapped by the conditions that run inside it (a trainable text encoder)."""
    from noisecraft.training.conditioning import build_network as _build

    return _build(config)


def build_denoiser(config, net: torch.nn.Module | None = None) -> Denoiser:
    """Network + schedule + prediction of a run config, as a sigma-space denoiser D(x, sigma, cond) -> x0."""
    d = config.diffusion
    net = net if net is not None else build_network(config)
    schedule = build_schedule(d.schedule, **d.schedule_options())
    return Denoiser(net, schedule, Prediction(d.prediction, sigma_data=d.sigma_data))
