"""Configuration of autoencoder training: frozen dataclasses validated on construction, and named presets.

    AERunConfig = name + autoencoder (models.autoencoder.AutoencoderConfig) + data (runconfig.DataConfig)
                  + loss (AELossConfig) + train (AETrainConfig)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from noisecraft.errors import ConfigError, require, unknown_name
from noisecraft.models.autoencoder import AE_MODEL_PRESETS, AutoencoderConfig
from noisecraft.runconfig import DataConfig


@dataclass(frozen=True)
class AELossConfig:
    """L = l1 |x - x_hat| + perceptual d_effnet(x, x_hat) + kl KL / (C H W) + lambda_adapt disc (-D(x_hat))."""

    l1_weight: float = 1.0              # weight of the mean absolute error
    perceptual_weight: float = 1.0      # weight of the LPIPS-like EfficientNet-Lite0 distance (0: off)
    kl_weight: float = 1e-6             # weight of KL(q(z|x) || N(0, I)) per pixel value ("kl" kind only)
    disc_weight: float = 0.5            # scale of the adaptive GAN weight (Esser et al. 2021, Eq. 7)
    disc_start: int | None = None       # step at which the patch discriminator switches on (None: never)
    disc_channels: int = 32             # width of the discriminator's first layer
    disc_layers: int = 2                # stride-2 layers of the discriminator
    disc_lr_mult: float = 1.0           # discriminator learning rate = train.lr * this

    def __post_init__(self):
        for name in ("l1_weight", "perceptual_weight", "kl_weight", "disc_weight"):
            require(getattr(self, name) >= 0, f"loss.{name}", f"must be >= 0, got {getattr(self, name)}")
        require(self.l1_weight + self.perceptual_weight > 0, "loss", "l1_weight + perceptual_weight must be > 0")
        require(self.disc_start is None or self.disc_start >= 0, "loss.disc_start",
               f"must be None or >= 0, got {self.disc_start}")
        require(self.disc_channels >= 1 and self.disc_layers >= 1, "loss.disc_channels/disc_layers", "must be >= 1")
        require(self.disc_lr_mult > 0, "loss.disc_lr_mult", f"must be > 0, got {self.disc_lr_mult}")


@dataclass(frozen=True)
class AETrainConfig:
    batch_size: int = 16                # images per step
    lr: float = 5e-4                    # Adam learning rate after warm-up
    adam_betas: tuple[float, float] = (0.5, 0.9)  # as in the LDM / taming autoencoders
    warmup_steps: int = 50              # linear LR warm-up from 0
    grad_clip: float = 1.0              # global gradient-norm clip (0: off)
    seed: int = 0                       # all randomness derives from (seed, step)
    steps: int = 10_000                 # stop after this many steps
    minutes: float | None = None        # or after this much wall time
    checkpoint_every: int = 200         # checkpoint every this many steps (and at the end)
    log_every: int = 10                 # log the losses every this many steps
    eval_every: int = 200               # PSNR / SSIM of reconstructions every this many steps (and at the end)
    fd_every: int = 600                 # FD of reconstructions every this many steps (and at the end)
    eval_num: int = 256                 # held-out images for PSNR / SSIM / FD of reconstructions
    eval_features: str | None = "effnet"  # feature extractor of the reconstruction FD (None: skip FD)
    scale_num: int = 1024               # training images whose latents set the scaling factor
    threads: int | None = None          # torch CPU threads

    def __post_init__(self):
        for name in ("batch_size", "steps", "checkpoint_every", "log_every", "eval_every", "fd_every", "eval_num",
                     "scale_num"):
            require(getattr(self, name) >= 1, f"train.{name}", f"must be >= 1, got {getattr(self, name)}")
        require(self.eval_num >= 2, "train.eval_num", f"must be >= 2, got {self.eval_num}")
        require(self.lr > 0, "train.lr", f"must be > 0, got {self.lr}")
        require(self.warmup_steps >= 0, "train.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        require(self.grad_clip >= 0, "train.grad_clip", f"must be >= 0, got {self.grad_clip}")
        require(self.minutes is None or self.minutes > 0, "train.minutes", f"must be > 0, got {self.minutes}")
        require(all(0 <= b < 1 for b in self.adam_betas), "train.adam_betas", f"must be in [0, 1), got "
                                                                            f"{self.adam_betas}")


@dataclass(frozen=True)
class AERunConfig:
    name: str = "ae"
    autoencoder: AutoencoderConfig = field(default_factory=lambda: AE_MODEL_PRESETS["f4-small"])
    data: DataConfig = field(default_factory=lambda: DataConfig(dataset="emoji", split="train"))
    loss: AELossConfig = field(default_factory=AELossConfig)
    train: AETrainConfig = field(default_factory=AETrainConfig)

    def __post_init__(self):
        if self.data.autoencoder is not None:
            raise ConfigError("data.autoencoder: an autoencoder is trained on images; leave it unset")


_AE_64 = AERunConfig(
    name="ae-64",
    autoencoder=AE_MODEL_PRESETS["f4-small"],
    data=DataConfig(dataset="emoji", split="train"),
    loss=AELossConfig(perceptual_weight=0.5, disc_start=None),  # benchmarks/latent_vs_pixel.md "Perceptual weight"
    train=AETrainConfig(batch_size=16, lr=5e-4, minutes=13.0, steps=100_000, checkpoint_every=100,
                        eval_every=100, fd_every=300, eval_num=200, scale_num=512),
)

AE_PRESETS: dict[str, AERunConfig] = {
    # 64x64 emoji, f = 4, 4 latent channels (64x64x3 -> 16x16x4), L1 + 0.5 perceptual + KL 1e-6 (at weight 1 the
    # perceptual term dominates the L1 term and colours drift: measured in benchmarks/latent_vs_pixel.md
    # "Perceptual weight"). No patch GAN: a 13-minute CPU budget leaves no time for the adversarial phase, which
    # LDM starts after 50k steps; switch it on with loss.disc_start=STEP for longer runs.
    "ae-64": _AE_64,
    # The same with f = 8, 4 latent channels (64x64x3 -> 8x8x4).
    "ae-64-f8": replace(_AE_64, name="ae-64-f8", autoencoder=AE_MODEL_PRESETS["f8-small"]),
    # 64x64 grey glyphs rendered natively from matplotlib's fonts, f = 4, 4 latent channels (64x64x1 -> 16x16x4).
    "ae-glyphs-64": replace(
        _AE_64, name="ae-glyphs-64",
        autoencoder=replace(AE_MODEL_PRESETS["f4-small"], in_channels=1),
        data=DataConfig(dataset="glyphs", split="train", resolution=64),
    ),
    # The compositional scenes (32x32 RGB, flat colours on black), f = 4, 4 latent channels (32x32x3 -> 8x8x4): the
    # stage 1 of the latent text-to-image preset `ldm-scenes-text` (benchmarks/scenes_text.md "Latent diffusion").
    # L1 only: flat shapes have no texture for a perceptual term to keep.
    "ae-scenes": replace(
        _AE_64, name="ae-scenes",
        data=DataConfig(dataset="scenes", split="train"),
        loss=AELossConfig(perceptual_weight=0.0, disc_start=None),
        train=replace(_AE_64.train, batch_size=32, minutes=12.0, checkpoint_every=200, eval_every=200,
                      eval_num=256, scale_num=1024, eval_features=None),  # no FD: PSNR/SSIM suffice here
    ),
    # For tests and smoke runs: sklearn's digits as 16x16 RGB, a 20k-parameter f = 4 autoencoder, no effnet.
    "ae-tiny": AERunConfig(
        name="ae-tiny",
        autoencoder=AutoencoderConfig(block_channels=(8, 16, 16), layers_per_block=1, latent_channels=2,
                                      norm_groups=4),
        data=DataConfig(dataset="digits", split="train", resolution=16, channels=3, limit=64),
        loss=AELossConfig(perceptual_weight=0.0, disc_start=2, disc_channels=8, disc_layers=1),
        train=AETrainConfig(batch_size=8, lr=1e-3, warmup_steps=2, steps=6, checkpoint_every=3, log_every=1,
                            eval_every=3, fd_every=3, eval_num=16, eval_features=None, scale_num=32),
    ),
}


def get_ae_preset(name: str) -> AERunConfig:
    if name not in AE_PRESETS:
        raise unknown_name("autoencoder preset", name, AE_PRESETS)
    return AE_PRESETS[name]
