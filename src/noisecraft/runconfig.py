"""The run configuration: one frozen dataclass per concern, composed in `RunConfig`.

The final config is written as JSON beside every run (`DIR/config.json`) and into each checkpoint's
metadata, so a run directory is self-describing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from noisecraft.conditions.config import ConditioningConfig
from noisecraft.config import apply_overrides, parse_override
from noisecraft.core.losses import WEIGHTINGS
from noisecraft.core.prediction import PREDICTIONS
from noisecraft.distill_config import DistillConfig
from noisecraft.errors import ConfigError, require, unknown_name
from noisecraft.models import DEFAULT_MODEL, MODELS, network_configs
from noisecraft.models.dit import DiTConfig
from noisecraft.models.mlp import MLPConfig
from noisecraft.models.mmdit import MMDiTConfig
from noisecraft.models.unet import UNetConfig
from noisecraft.schedules.steps import STEP_SCHEDULES
from noisecraft.schedules.training import SCHEDULES
from noisecraft.text.config import TextConfig
from noisecraft.training.repa import REPAConfig


@dataclass(frozen=True)
class DiffusionConfig:
    schedule: str = "linear"        # training noise schedule: linear, scaled_linear, cosine, sigmoid, vp, ve, edm, flow
    num_timesteps: int = 1000       # T of the discrete schedules
    beta_start: float = 1e-4        # first beta of the discrete schedules
    beta_end: float = 0.02          # last beta of the discrete schedules
    prediction: str = "eps"         # what the network predicts: eps, x0, v, flow, edm
    sigma_data: float = 0.5         # EDM's data standard deviation (edm schedule and prediction)
    weighting: str = "simple"       # loss weighting: simple, min_snr, edm
    min_snr_gamma: float = 5.0      # gamma of min-SNR weighting (Hang et al. 2023)
    p_mean: float = -1.2            # edm schedule: training ln sigma ~ N(p_mean, p_std^2) (Karras et al. 2022)
    p_std: float = 1.2
    flow_logit_mean: float = 0.0    # flow schedule: training t ~ logit-normal(mean, std) (Esser et al. 2024, Sec. 3.1)
    flow_logit_std: float = 1.0
    flow_shift: float = 1.0         # flow schedule: SD3's timestep shift s (Eq. 23), training and "uniform" steps

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise unknown_name("schedule", self.schedule, SCHEDULES)
        if self.prediction not in PREDICTIONS:
            raise unknown_name("prediction", self.prediction, PREDICTIONS)
        if self.weighting not in WEIGHTINGS:
            raise unknown_name("loss weighting", self.weighting, WEIGHTINGS)
        require(self.num_timesteps >= 2, "diffusion.num_timesteps", f"must be >= 2, got {self.num_timesteps}")
        require(0 < self.beta_start < self.beta_end < 1, "diffusion.beta_start/beta_end",
               f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")
        require(self.sigma_data > 0, "diffusion.sigma_data", f"must be > 0, got {self.sigma_data}")
        require(self.min_snr_gamma > 0, "diffusion.min_snr_gamma", f"must be > 0, got {self.min_snr_gamma}")
        require(self.p_std > 0, "diffusion.p_std", f"must be > 0, got {self.p_std}")
        require(self.flow_logit_std > 0, "diffusion.flow_logit_std", f"must be > 0, got {self.flow_logit_std}")
        require(self.flow_shift > 0, "diffusion.flow_shift", f"must be > 0 (1 = no shift), got {self.flow_shift}")

    def schedule_options(self) -> dict:
        if self.schedule == "edm":
            return {"sigma_data": self.sigma_data, "p_mean": self.p_mean, "p_std": self.p_std}
        if self.schedule == "flow":
            return {"logit_mean": self.flow_logit_mean, "logit_std": self.flow_logit_std, "shift": self.flow_shift}
        if self.schedule in ("vp", "ve"):
            return {}
        return {"num_timesteps": self.num_timesteps, "beta_start": self.beta_start, "beta_end": self.beta_end}


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "mnist"          # dataset name (see `noisecraft.data.available_datasets()`)
    root: str | None = None         # image folder for dataset "folder"
    resolution: int | None = None   # resize to this size (folder default 64; others native)
    channels: int | None = None     # 1 or 3 (None: the dataset's own)
    split: str = "train"            # all, train or test
    limit: int | None = None        # use only the first `limit` items
    count: int | None = None        # generated datasets (scenes): how many items to draw (None: its default)
    frames: int | None = None       # video datasets (noisecraft.data.video): frames per clip (None: its default)
    hflip: bool = False             # random horizontal flips (not for digits/glyphs)
    autoencoder: str | None = None  # latent diffusion: an autoencoder checkpoint dir or diffusers AutoencoderKL folder


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 64            # images per optimiser step
    lr: float = 2e-4                # AdamW learning rate after warm-up
    warmup_steps: int = 200         # linear LR warm-up from 0
    weight_decay: float = 0.0       # AdamW weight decay
    adam_betas: tuple[float, float] = (0.9, 0.999)  # AdamW (beta1, beta2)
    grad_clip: float = 1.0          # clip the global gradient norm to this (0: off)
    ema_decay: float = 0.999        # EMA decay; the effective decay warms up as min(decay, (1+t)/(10+t))
    ema_sigma_rel: float = 0.0      # > 0: the EMA is instead the power-function EMA of this relative width
                                    # (Karras et al. 2024, eq. 3), whose length grows with the run (ema_decay unused)
    bf16: bool = False              # bfloat16 autocast for the forward/backward pass
    seed: int = 0                   # all randomness derives from (seed, step)
    steps: int = 10_000             # stop after this many optimiser steps
    minutes: float | None = None    # or after this much wall time (whichever comes first)
    checkpoint_every: int = 500     # write a checkpoint every this many steps (and at the end)
    log_every: int = 25             # log the loss every this many steps
    max_bad_steps: int = 5          # stop after this many consecutive non-finite losses/gradients
    threads: int | None = None      # torch CPU threads (None: torch's default)
    # --- scale and speed (docs: README "Scaling out"; benchmarks/train_speed.md) ---
    grad_accum: int = 1             # micro-batches per process per step; batch_size stays the global batch
    fp16: bool = False              # float16 autocast with a dynamic grad scaler (skipped steps are logged)
    compile: bool = False           # torch.compile the network's forward (nn.Module.compile)
    grad_checkpointing: bool = False  # recompute each network block's activations in backward (less memory)
    fused_adam: bool | None = None  # fused AdamW kernel (None: where the device is CUDA; true: any device)
    fsdp: bool = False              # FSDP2 fully_shard the network under torchrun (else DDP when world > 1)
    oom_retry: bool = True          # on out-of-memory halve the micro-batch (doubling grad_accum) and retry
    phema_sigma_rels: tuple[float, ...] = ()  # post-hoc EMA (Karras et al. 2024): track these sigma_rel
    phema_every: int = 0            # post-hoc EMA snapshot interval in steps (0: checkpoint_every)
    repa: REPAConfig = field(default_factory=REPAConfig)  # representation alignment (training/repa.py)

    def __post_init__(self):
        for name in ("batch_size", "steps", "checkpoint_every", "log_every", "max_bad_steps", "grad_accum"):
            require(getattr(self, name) >= 1, f"train.{name}", f"must be >= 1, got {getattr(self, name)}")
        require(self.batch_size % self.grad_accum == 0, "train.grad_accum",
               f"must divide train.batch_size={self.batch_size}, got {self.grad_accum}")
        require(not (self.bf16 and self.fp16), "train.bf16/fp16", "choose at most one autocast dtype")
        require(all(0 < s < 12 ** -0.5 for s in self.phema_sigma_rels), "train.phema_sigma_rels",
               f"each sigma_rel must be in (0, 12^-1/2 = 0.2887) (exponent gamma > 0), got {self.phema_sigma_rels}")
        require(self.phema_every >= 0, "train.phema_every", f"must be >= 0, got {self.phema_every}")
        require(self.lr > 0, "train.lr", f"must be > 0, got {self.lr}")
        require(self.warmup_steps >= 0, "train.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        require(0 <= self.ema_decay < 1, "train.ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        require(self.ema_sigma_rel == 0 or 0 < self.ema_sigma_rel < 12 ** -0.5, "train.ema_sigma_rel",
                f"must be 0 (off) or in (0, 12^-1/2 = 0.2887), got {self.ema_sigma_rel}")
        require(self.grad_clip >= 0, "train.grad_clip", f"must be >= 0, got {self.grad_clip}")
        require(self.minutes is None or self.minutes > 0, "train.minutes", f"must be > 0, got {self.minutes}")
        require(all(0 <= b < 1 for b in self.adam_betas), "train.adam_betas",
               f"must be in [0, 1), got {self.adam_betas}")


@dataclass(frozen=True)
class SampleConfig:
    sampler: str = "heun"           # default sampler for previews and `noisecraft sample`
    steps: int = 18                 # default number of steps
    step_schedule: str = "karras"   # default step schedule
    num: int = 64                   # images in the preview grid

    def __post_init__(self):
        if self.step_schedule not in STEP_SCHEDULES:
            raise unknown_name("step schedule", self.step_schedule, STEP_SCHEDULES)
        require(self.steps >= 1, "sample.steps", f"must be >= 1, got {self.steps}")
        require(self.num >= 1, "sample.num", f"must be >= 1, got {self.num}")


@dataclass(frozen=True)
class EvalConfig:
    every: int = 0                      # evaluate the EMA model every this many steps (0: never)
    metrics: tuple[str, ...] = ("fd",)  # metric names (noisecraft.eval.METRICS); the first picks best/
    num_samples: int = 500              # images generated per evaluation
    features: str | None = None         # feature extractor (None: the dataset's default)

    def __post_init__(self):
        require(self.every >= 0, "eval.every", f"must be >= 0 (0 turns evaluation off), got {self.every}")
        require(self.num_samples >= 2, "eval.num_samples", f"must be >= 2, got {self.num_samples}")
        require(len(self.metrics) >= 1, "eval.metrics", "name at least one metric")


@dataclass(frozen=True)
class RunConfig:
    """A whole run. `network` is the config of the network `model` names (the MODELS registry): a UNetConfig,
    MLPConfig or DiTConfig (None: that class's defaults), serialised as {"model": "unet", "network": {...}};
    `from_dict` reads the tag first and builds `network` as that model's config class."""

    name: str = "run"                                          # preset or run name
    model: str = DEFAULT_MODEL                                 # which network: unet, mlp or dit (models.MODELS)
    network: UNetConfig | MLPConfig | DiTConfig | MMDiTConfig | None = field(  # the hyper-parameters of that network
        default=None, metadata={"tagged_by": "model", "classes": network_configs})
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    text: TextConfig = field(default_factory=TextConfig)                       # text encoder (text-to-image)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)  # condition dropout, text routes
    distill: DistillConfig | None = None  # a few-step student (noisecraft distill); None: an ordinary diffusion run

    def __post_init__(self):
        require(self.model in MODELS, "model", f"unknown model {self.model!r}; allowed: {', '.join(sorted(MODELS))}")
        config_cls = MODELS[self.model][0]
        if self.network is None:
            object.__setattr__(self, "network", config_cls())
        if not isinstance(self.network, config_cls):
            raise ConfigError(f"network: model {self.model!r} needs a {config_cls.__name__}, got "
                              f"{type(self.network).__name__} (set model and network together)")


def apply_run_overrides(data: dict, overrides: list[str]) -> dict:
    """Dotted overrides of a run config dict. `network.base_channels=48` sets a field of the network section;
    `unet.base_channels=48` (also `dit.x=`, `mlp.x=`) is accepted for the same when it names the run's model, and
    is an error when it names another. `model=dit` on a run of another model resets the network section to that
    model's defaults (the old section's fields belong to the old network)."""
    return apply_overrides(data, overrides, _network_alias)


def _network_alias(path: list[str], data: dict, text: str) -> list[str]:
    model = data.get("model", DEFAULT_MODEL)
    if path == ["model"]:
        if "network" in data and parse_override(text)[1] != model:
            data["network"] = {}
        return path
    if len(path) < 2 or path[0] not in MODELS:
        return path
    if path[0] != model:
        raise ConfigError(f"override {text!r}: {path[0]}.* sets the {path[0]} network, but this run's model is "
                          f"{model!r}; set network.{'.'.join(path[1:])} (or {model}.*), or model={path[0]} first")
    return ["network", *path[1:]]
