"""Network and denoiser construction from a run config: the one place a run's modules are built.

    config = adapt_config(config, data_shape)   # the data and the conditions set the network's input widths
    denoiser = build_denoiser(config)            # network (+ the conditions' wrappers) + schedule + prediction

Training, sampling, evaluation and interop all build through here, so none of them imports another.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import torch

from noisecraft.conditions import conditions_for
from noisecraft.core.denoiser import Denoiser
from noisecraft.core.prediction import Prediction
from noisecraft.errors import ConfigError
from noisecraft.schedules.training import build_schedule


def adapt_network_to_data(config, data_shape: tuple):
    """Set the network's input channels / data dim from the data (the data is the source of truth): each network
    config class adapts itself (`UNetConfig.for_data`, `DiTConfig.for_data`, `MLPConfig.for_data`)."""
    return replace(config, network=config.network.for_data(tuple(data_shape)))


def adapt_config(config, data_shape: tuple):
    """The run config with the network's input widths set from the data and from the run's conditions
    (the data and the conditions are the source of truth: in_channels, num_classes, context_dim, ...)."""
    config = adapt_network_to_data(config, data_shape)
    fields = conditions_for(config).network_fields()
    if not fields:
        return config
    net_cfg = config.network
    names = {f.name for f in dataclasses.fields(net_cfg)}
    missing = sorted(k for k, v in fields.items() if v and k not in names)
    if missing:
        from noisecraft.models import network_configs

        having = [kind for kind, cls in network_configs().items()
                  if set(missing) <= {f.name for f in dataclasses.fields(cls)}]
        raise ConfigError(f"the run's conditions need network input(s) {', '.join(missing)}, which model "
                          f"{config.model!r} does not have; models with them: {', '.join(having)}")
    limit = getattr(net_cfg, "max_text_tokens", None)  # a network with a token limit (MMDiT) vs the prompts' limit
    if limit is not None and fields.get("context_dim") and config.text.max_tokens > limit:
        raise ConfigError(f"text.max_tokens is {config.text.max_tokens}, but model {config.model!r} takes at most "
                          f"{limit} text tokens (network.max_text_tokens); allowed: text.max_tokens <= {limit}, or "
                          f"raise network.max_text_tokens")
    return replace(config, network=replace(net_cfg, **{k: v for k, v in fields.items() if k in names}))


def build_network(config) -> torch.nn.Module:
    """The network of a run config, wrapped by the conditions that run inside it (a trainable text encoder)."""
    from noisecraft.models import build_model

    student = getattr(config, "distill", None)
    if student is not None and student.guidance_input:  # an LCM student: the guidance scale w is an input
        from noisecraft.models.guidance_input import GuidanceScaleInput

        width = student.guidance_embed_dim
        net = build_model(config.model, replace(config.network, vector_dim=config.network.vector_dim + width))
        return conditions_for(config).wrap_network(GuidanceScaleInput(net, width))
    return conditions_for(config).wrap_network(build_model(config.model, config.network))


def build_denoiser(config, net: torch.nn.Module | None = None) -> Denoiser:
    """Network + schedule + prediction of a run config, as a sigma-space denoiser D(x, sigma, cond) -> x0."""
    d = config.diffusion
    net = net if net is not None else build_network(config)
    schedule = build_schedule(d.schedule, **d.schedule_options())
    student = getattr(config, "distill", None)  # a consistency student: the boundary f(x, eps) = x built in
    boundary = student.prediction_options() if student is not None else {}
    return Denoiser(net, schedule, Prediction(d.prediction, sigma_data=d.sigma_data, **boundary))
