"""Training the causal video autoencoder (`noisecraft.models.causal_vae`): `noisecraft train-autoencoder --preset
ae-video --out runs/ae-video`, then latent video diffusion with `data.autoencoder=runs/ae-video`.

One step s (as the image autoencoder's, `noisecraft.training.autoencoder_trainer`, without the perceptual and GAN
terms, which a few CPU minutes leave no time for):

    x_hat, q = AE(x)                  z ~ q(z|x) (reparameterised, noise from a generator seeded (seed, s, 0, 7))
    L = |x - x_hat| + kl KL(q || N(0, I)) / (C T H W)      (means over the batch; kl as LDM's, Rombach et al. 2022)

Batches follow training.batches.BatchOrder (epoch permutations seeded by (seed, e)). At the end: the latent
scaling factor 1 / std(z) of the posterior means of up to 256 training clips, PSNR of reconstructions on the test
clips, DIR/reconstructions.png (for each clip a row of originals above a row of reconstructions) and the checkpoint
in the image autoencoder's format (`noisecraft.autoencoder.checkpoint`, config key "causal_vae"), which
`noisecraft.load_autoencoder` reads. Resuming is not supported: a run starts from step 0.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from noisecraft.errors import ConfigError, require, unknown_name
from noisecraft.models.causal_vae import CausalVAEConfig, CausalVideoVAE
from noisecraft.runconfig import DataConfig

SEED_STREAM = 7


@dataclass(frozen=True)
class VideoAETrainConfig:
    batch_size: int = 8               # clips per step
    lr: float = 1e-3                  # Adam learning rate after warm-up
    warmup_steps: int = 20            # linear warm-up from 0
    kl_weight: float = 1e-6           # weight of KL / (C T H W)
    grad_clip: float = 1.0            # global gradient-norm clip (0: off)
    seed: int = 0
    steps: int = 10_000               # stop after this many steps
    minutes: float | None = None      # or after this much wall time
    log_every: int = 25               # print / log the loss every this many steps
    eval_num: int = 64                # test clips for the final PSNR
    scale_num: int = 256              # training clips whose latents set the scaling factor
    threads: int | None = None

    def __post_init__(self):
        for name in ("batch_size", "steps", "log_every", "eval_num", "scale_num"):
            require(getattr(self, name) >= 1, f"train.{name}", f"must be >= 1, got {getattr(self, name)}")
        require(self.lr > 0 and self.kl_weight >= 0, "train.lr/kl_weight", "lr must be > 0 and kl_weight >= 0")
        require(self.minutes is None or self.minutes > 0, "train.minutes", f"must be > 0, got {self.minutes}")


@dataclass(frozen=True)
class VideoAERunConfig:
    name: str = "ae-video"
    causal_vae: CausalVAEConfig = field(default_factory=CausalVAEConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(dataset="moving-mnist", split="train", frames=9,
                                                                 resolution=24))
    train: VideoAETrainConfig = field(default_factory=VideoAETrainConfig)

    def __post_init__(self):
        if self.data.autoencoder is not None:
            raise ConfigError("data.autoencoder: an autoencoder is trained on clips; leave it unset")


VIDEO_AE_PRESETS: dict[str, VideoAERunConfig] = {
    # Moving digits, 9 frames of 24x24 grey -> 3 latent frames of 6x6x4 (f = 4 in space, 4 in time; 12x fewer values).
    "ae-video": VideoAERunConfig(train=VideoAETrainConfig(minutes=3.0)),
    # For tests and smoke runs: 5 frames of 16x16, a few thousand parameters.
    "ae-video-tiny": VideoAERunConfig(
        name="ae-video-tiny",
        causal_vae=CausalVAEConfig(block_channels=(8, 8, 8), latent_channels=2, norm_groups=4),
        data=DataConfig(dataset="moving-mnist", split="train", frames=5, resolution=16, limit=32),
        train=VideoAETrainConfig(batch_size=4, steps=4, log_every=2, eval_num=4, scale_num=8)),
}


def get_video_ae_preset(name: str) -> VideoAERunConfig:
    if name not in VIDEO_AE_PRESETS:
        raise unknown_name("video autoencoder preset", name, VIDEO_AE_PRESETS)
    return VIDEO_AE_PRESETS[name]


def vae_loss(vae: CausalVideoVAE, x: torch.Tensor, generator: torch.Generator, kl_weight: float) -> torch.Tensor:
    """|x - x_hat| + kl_weight KL(q || N(0, I)) / (C T H W), means over the batch (module docstring)."""
    x_hat, q = vae(x, generator)
    return (x - x_hat).abs().mean() + kl_weight * q.kl().mean() / x[0].numel()


def _load(config: VideoAERunConfig, split: str, limit=None):
    from noisecraft.data import load_dataset

    c = config.data
    return load_dataset(c.dataset, root=c.root, resolution=c.resolution, channels=c.channels, split=split,
                        limit=limit if limit is not None else c.limit, seed=config.train.seed, count=c.count,
                        frames=c.frames).images


def _check_data(config: VideoAERunConfig, clips: torch.Tensor) -> None:
    from noisecraft.models.causal_vae import latent_frames

    if clips.ndim != 5:
        raise ConfigError(f"data.dataset {config.data.dataset!r}: the video autoencoder trains on clips (N, C, T, H, W)"
                          f", got {tuple(clips.shape)}")
    latent_frames(clips.shape[2], config.causal_vae.time_factor)  # 1 + f_t k frames, else a clear error
    if clips.shape[1] != config.causal_vae.in_channels:
        raise ConfigError(f"causal_vae.in_channels={config.causal_vae.in_channels}, the clips have {clips.shape[1]} "
                          f"channels; set causal_vae.in_channels={clips.shape[1]}")


@torch.no_grad()
def scaling_factor(vae: CausalVideoVAE, clips: torch.Tensor, batch: int = 16) -> float:
    """1 / std of the posterior means of `clips` (LDM's latent scaling, Rombach et al. 2022, sec. G)."""
    z = torch.cat([vae.encode(clips[i:i + batch]) for i in range(0, len(clips), batch)])
    return float(1.0 / z.float().std())


@torch.no_grad()
def reconstruction_psnr(vae: CausalVideoVAE, clips: torch.Tensor, batch: int = 16) -> float:
    """Mean over clips of PSNR(x, decode(encode(x))) in dB, pixel values in [-1, 1] (peak-to-peak 2)."""
    out = []
    for i in range(0, len(clips), batch):
        x = clips[i:i + batch]
        mse = (vae.decode(vae.encode(x)).clamp(-1, 1) - x).pow(2).flatten(1).mean(1)
        out.append(10 * torch.log10(4.0 / mse.clamp_min(1e-12)))
    return float(torch.cat(out).mean())


def train_video_autoencoder(config: VideoAERunConfig, out_dir, *, device: str = "cpu", progress: bool = True) -> dict:
    """Train (module docstring) and write out_dir; returns step, loss, psnr, scaling_factor, seconds."""
    from noisecraft.training.batches import BatchOrder, step_seed

    t, out_dir = config.train, Path(out_dir)
    if t.threads:
        torch.set_num_threads(t.threads)
    clips = _load(config, config.data.split)
    _check_data(config, clips)
    torch.manual_seed(t.seed)
    vae = CausalVideoVAE(config.causal_vae).to(device)
    opt = torch.optim.Adam(vae.parameters(), lr=t.lr, betas=(0.5, 0.9))
    order = BatchOrder(len(clips), min(t.batch_size, len(clips)), t.seed)
    start, step, loss = time.monotonic(), 0, float("nan")
    while step < t.steps and (t.minutes is None or time.monotonic() - start < 60 * t.minutes):
        for group in opt.param_groups:
            group["lr"] = t.lr * min(1.0, (step + 1) / t.warmup_steps) if t.warmup_steps else t.lr
        gen = torch.Generator().manual_seed(step_seed(t.seed, step, 0, SEED_STREAM))
        value = vae_loss(vae, clips[order(step)].to(device), gen, t.kl_weight)
        opt.zero_grad(set_to_none=True)
        value.backward()
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(vae.parameters(), t.grad_clip)
        opt.step()
        step, loss = step + 1, float(value.detach())
        if progress and step % t.log_every == 0:
            print(f"step {step}: loss {loss:.4f} ({time.monotonic() - start:.0f} s)", flush=True)
    return _finish(config, vae.eval(), opt, out_dir, clips, step=step, loss=loss, seconds=time.monotonic() - start)


def _finish(config, vae, opt, out_dir: Path, clips, *, step: int, loss: float, seconds: float) -> dict:
    """Scaling factor, test PSNR, reconstructions.png, config.json and the checkpoint."""
    from noisecraft.autoencoder.checkpoint import save_ae_checkpoint
    from noisecraft.config import to_dict
    from noisecraft.files import atomic_write_json

    device = next(vae.parameters()).device
    t = config.train
    scale = scaling_factor(vae, clips[:t.scale_num].to(device))
    test = _load(config, "test", limit=t.eval_num).to(device)
    psnr = reconstruction_psnr(vae, test)
    vae.scaling_factor = scale
    state = {"step": step, "scaling_factor": scale, "shift_factor": 0.0, "loss": loss, "psnr": psnr,
             "time_factor": vae.time_factor, "factor": vae.factor}
    out_dir.mkdir(parents=True, exist_ok=True)
    save_ae_checkpoint(out_dir, config=to_dict(config), state=state, model=vae.state_dict(), disc=None,
                       optimizers={"optim_ae": opt.state_dict()})
    atomic_write_json(out_dir / "config.json", to_dict(config))
    _write_reconstructions(vae, test[:4], out_dir / "reconstructions.png")
    return {"step": step, "loss": loss, "psnr": psnr, "scaling_factor": scale, "seconds": seconds}


@torch.no_grad()
def _write_reconstructions(vae, x, path: Path) -> None:
    from noisecraft.video.io import strip_image
    from noisecraft.viz import save_png

    rec = vae.decode(vae.encode(x)).clamp(-1, 1)
    both = torch.stack([x, rec], 1).reshape(-1, *x.shape[1:])  # original, reconstruction, ...
    save_png(strip_image(both.cpu()), path, scale=2)

