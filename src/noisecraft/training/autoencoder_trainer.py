"""Autoencoder training (Rombach et al. 2022, section 3.1 and appendix G; Esser et al. 2021, section 3.1).

One step s:

    x_hat, q = AE(x)                         z ~ q(z|x) for "kl", the code for "deterministic"
    L_rec = l1 |x - x_hat| + perceptual d(x, x_hat)                          (means over the batch)
    L     = L_rec + kl KL(q || N(0, I)) / (C H W)  [+ lambda (-D(x_hat)) once s >= disc_start]
    lambda = disc_weight ||grad_GL L_rec|| / (||grad_GL (-D(x_hat))|| + 1e-4)  (G_L: decoder.conv_out)
    then the discriminator takes one hinge-loss step on (x, x_hat.detach()).

The KL is summed over the latent and divided by the number of pixel values, so `kl_weight` means what it
means in LDM (where both the reconstruction NLL and the KL are sums): 1e-6 there = 1e-6 here.

Determinism as in the diffusion trainer (training/batches.py): the batch order of epoch e comes from a
permutation seeded by (seed, e), the posterior noise of step s from a generator seeded by (seed, s, 0, 7);
the checkpoint stores the step, both networks and both Adam states, so a resumed run continues exactly.

At every `eval_every` steps and at the end: PSNR, SSIM and FD of reconstructions on held-out images
(`metrics.py`), plotted to DIR/metrics.png; the latent scaling factor 1 / std(z) measured on `scale_num`
training images (posterior means), stored in the checkpoint. At the end DIR/reconstructions.png (originals
above reconstructions), DIR/loss.png and DIR/diffusers/ (the weights as a diffusers AutoencoderKL folder).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

import torch

from noisecraft.autoencoder.checkpoint import load_ae_checkpoint, save_ae_checkpoint
from noisecraft.autoencoder.config import AERunConfig
from noisecraft.autoencoder.losses import (
    EffNetPerceptual,
    PatchDiscriminator,
    adaptive_weight,
    hinge_d_loss,
    hinge_g_loss,
)
from noisecraft.config import from_dict, to_dict
from noisecraft.errors import CheckpointError, DataError, NoisecraftError
from noisecraft.files import atomic_write_json
from noisecraft.models.autoencoder import Autoencoder
from noisecraft.training.batches import BatchOrder, step_seed
from noisecraft.training.precision import raise_if_diverged
from noisecraft.training.progress import advance, out_of_time, progress_bar, smoothed
from noisecraft.training.state import read_log, write_log

MAX_BAD_STEPS = 5
SEED_STREAM = 7  # the last entry of this trainer's per-step seeds: (seed, step, 0, 7)


def load_ae_data(config: AERunConfig, split: str | None = None, limit: int | None = None):
    from noisecraft.data import load_dataset

    c = config.data
    ds = load_dataset(c.dataset, root=c.root, resolution=c.resolution, channels=c.channels,
                      split=split or c.split, limit=limit if limit is not None else c.limit, seed=config.train.seed,
                      count=c.count)
    if ds.is_points:
        raise DataError(f"dataset {c.dataset!r} holds points, not images; an autoencoder needs images")
    f = config.autoencoder.factor
    if any(s % f for s in ds.data_shape[1:]):
        raise DataError(f"image size {'x'.join(map(str, ds.data_shape[1:]))} of {c.dataset!r} is not divisible by "
                        f"the autoencoder's downsampling factor f={f}; set data.resolution to a multiple of {f}")
    return ds


class AutoencoderTrainer:
    """Trains `config` into `out_dir`; `resume=True` continues from out_dir's checkpoint exactly."""

    def __init__(self, config: AERunConfig, out_dir, *, resume: bool = False, device: str = "cpu",
                 progress: bool = True):
        self.out_dir, self.device, self.progress = Path(out_dir), torch.device(device), progress
        ckpt = self._open_resume() if resume else None
        if ckpt is not None:
            saved = from_dict(AERunConfig, ckpt.config)
            config = replace(saved, train=replace(saved.train, steps=config.train.steps, minutes=config.train.minutes))
        if config.data.channels is None and config.autoencoder.in_channels != 3:
            config = replace(config, data=replace(config.data, channels=config.autoencoder.in_channels))
        self.config = config
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        self.data = load_ae_data(config)
        if self.data.data_shape[0] != config.autoencoder.in_channels:
            raise DataError(f"dataset has {self.data.data_shape[0]} channels but autoencoder.in_channels = "
                            f"{config.autoencoder.in_channels}; set data.channels")
        if len(self.data) < config.train.batch_size:
            raise DataError(f"dataset has {len(self.data)} images, fewer than train.batch_size="
                            f"{config.train.batch_size}")
        self.eval_images = self._eval_images()
        self._eval_features = None  # features of eval_images, computed at the first FD
        self._build()
        self.order = BatchOrder(len(self.data), config.train.batch_size, config.train.seed)
        self.step, self.bad_steps, self.consecutive_bad = 0, 0, 0
        self.scaling_factor, self.metrics = 1.0, {}
        self.log: list[dict] = []
        if ckpt is not None:
            self._restore(ckpt)

    # ----------------------------------------------------------------------------------------- set-up
    def _eval_images(self) -> torch.Tensor:
        n = self.config.train.eval_num
        try:
            held_out = load_ae_data(self.config, split="test", limit=n)
        except DataError:
            held_out = None
        if held_out is None or len(held_out) < 2:
            return self.data.images[-n:]
        return held_out.images

    def _build(self) -> None:
        c, t = self.config, self.config.train
        torch.manual_seed(t.seed)
        self.ae = Autoencoder(c.autoencoder).to(self.device)
        self.disc = None
        if c.loss.disc_start is not None:
            self.disc = PatchDiscriminator(c.autoencoder.out_ch, c.loss.disc_channels, c.loss.disc_layers)
            self.disc = self.disc.to(self.device)
        self.perceptual = EffNetPerceptual().to(self.device) if c.loss.perceptual_weight > 0 else None
        self.opt_ae = torch.optim.Adam(self.ae.parameters(), lr=t.lr, betas=t.adam_betas)
        self.opt_disc = None if self.disc is None else torch.optim.Adam(
            self.disc.parameters(), lr=t.lr * c.loss.disc_lr_mult, betas=t.adam_betas)
        self.images = self.data.images.to(self.device)

    def _open_resume(self):
        try:
            return load_ae_checkpoint(self.out_dir)
        except CheckpointError as e:
            raise CheckpointError(f"cannot resume: {e}") from None

    def _restore(self, ckpt) -> None:
        try:
            self.ae.load_state_dict(ckpt.tensors["model"], strict=True)
            self.opt_ae.load_state_dict(ckpt.optimizer_state("optim_ae"))
            if self.disc is not None:
                self.disc.load_state_dict(ckpt.tensors["disc"], strict=True)
                self.opt_disc.load_state_dict(ckpt.optimizer_state("optim_disc"))
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{ckpt.path} does not fit this autoencoder: {e}") from None
        s = ckpt.state
        self.step, self.bad_steps = int(s["step"]), int(s["bad_steps"])
        self.scaling_factor, self.metrics = float(s["scaling_factor"]), dict(s.get("metrics", {}))
        self.ae.scaling_factor = self.scaling_factor
        self.log = [r for r in read_log(self.out_dir) if r["step"] <= self.step]

    # ------------------------------------------------------------------------------------ one step
    def lr_at(self, step: int) -> float:
        t = self.config.train
        return t.lr * min(1.0, (step + 1) / t.warmup_steps) if t.warmup_steps else t.lr

    def batch(self, step: int) -> torch.Tensor:
        """The images of step's batch (epoch e in the permutation seeded by (seed, e), as the diffusion trainer)."""
        return self.images[self.order(step).to(self.device)]

    def disc_active(self, step: int) -> bool:
        return self.disc is not None and step >= self.config.loss.disc_start

    def generator_loss(self, x: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(total autoencoder loss, x_hat, parts) of step's batch x."""
        w = self.config.loss
        gen = torch.Generator().manual_seed(step_seed(self.config.train.seed, step, 0, SEED_STREAM))
        x_hat, post = self.ae(x, gen)
        l1 = (x - x_hat).abs().mean()
        perc = self.perceptual(x, x_hat).mean() if self.perceptual is not None else torch.zeros((), device=x.device)
        rec = w.l1_weight * l1 + w.perceptual_weight * perc
        kl = post.kl().mean() / x[0].numel() if post is not None else torch.zeros((), device=x.device)
        loss = rec + w.kl_weight * kl
        parts = {"l1": float(l1.detach()), "perceptual": float(perc.detach()), "kl": float(kl.detach())}
        if self.disc_active(step):
            self.disc.requires_grad_(False)
            g = hinge_g_loss(self.disc(x_hat))
            lam = w.disc_weight * adaptive_weight(rec, g, self.ae.decoder.conv_out.weight)
            self.disc.requires_grad_(True)
            loss = loss + lam * g
            parts.update(g=float(g.detach()), adaptive_weight=float(lam))
        return loss, x_hat, parts

    def _optimise(self, opt, params, loss: torch.Tensor) -> bool:
        """zero_grad, backward, clip, step; False (no update) if the loss or gradient is not finite."""
        opt.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            return False
        loss.backward()
        clip = self.config.train.grad_clip or math.inf
        if not torch.isfinite(torch.nn.utils.clip_grad_norm_(params, clip)):
            opt.zero_grad(set_to_none=True)
            return False
        opt.step()
        return True

    def train_step(self) -> dict:
        """One autoencoder step and (once active) one discriminator step."""
        self.ae.train()
        for opt in filter(None, (self.opt_ae, self.opt_disc)):
            for group in opt.param_groups:
                group["lr"] = self.lr_at(self.step) * (self.config.loss.disc_lr_mult if opt is self.opt_disc else 1)
        x = self.batch(self.step)
        loss, x_hat, parts = self.generator_loss(x, self.step)
        ok = self._optimise(self.opt_ae, list(self.ae.parameters()), loss)
        if ok and self.disc_active(self.step):
            self.disc.train()
            d_loss = hinge_d_loss(self.disc(x), self.disc(x_hat.detach()))
            ok = self._optimise(self.opt_disc, list(self.disc.parameters()), d_loss)
            parts["d"] = float(d_loss.detach())
        self._count(ok, float(loss.detach()))
        self.step += 1
        return {"loss": float(loss.detach()), **parts}

    def _count(self, ok: bool, loss: float) -> None:
        if ok:
            self.consecutive_bad = 0
            return
        self.bad_steps += 1
        self.consecutive_bad += 1
        raise_if_diverged(self.consecutive_bad, MAX_BAD_STEPS, step=self.step, out_dir=self.out_dir,
                          last=f"loss {loss}")

    # ------------------------------------------------------------------------------ measurements
    @torch.no_grad()
    def measure_scaling_factor(self) -> float:
        """1 / std of the posterior means of the first `scale_num` training images (Rombach et al. 2022,
        section 4.3.2 / appendix G: the latents are rescaled to unit standard deviation)."""
        self.ae.eval()
        x = self.images[: self.config.train.scale_num]
        z = torch.cat([self.ae.encode(x[s:s + 64]).float() for s in range(0, len(x), 64)])
        std = float(z.double().std())
        if not math.isfinite(std) or std <= 0:
            raise NoisecraftError(f"the latents have standard deviation {std}; cannot set a scaling factor")
        self.scaling_factor = 1.0 / std
        self.ae.scaling_factor = self.scaling_factor
        return self.scaling_factor

    def evaluate(self, with_fd: bool = True) -> dict:
        from noisecraft.autoencoder.metrics import reconstruction_metrics
        from noisecraft.viz import save_grid

        self.ae.eval()
        features = self.config.train.eval_features if with_fd else None
        if features and self._eval_features is None:
            from noisecraft.eval import get_extractor

            self._eval_features = get_extractor(features)(self.eval_images)
        metrics, rec = reconstruction_metrics(self.ae, self.eval_images, features=features,
                                              reference_features=self._eval_features)
        if with_fd:  # the full evaluations also re-measure the latent scale (encodes scale_num images)
            metrics["scaling_factor"] = self.measure_scaling_factor()
        self.metrics = {"step": self.step, **metrics}
        self.log.append({"kind": "eval", **self.metrics})
        n = min(16, len(rec))
        save_grid(torch.cat([self.eval_images[:n].cpu(), rec[:n]]), self.out_dir / "reconstructions.png", nrow=n,
                  info={"top": "originals (held out)", "bottom": "reconstructions", "step": self.step, **metrics})
        return self.metrics

    # ---------------------------------------------------------------------------------- the loop
    def save(self) -> Path:
        state = {"step": self.step, "bad_steps": self.bad_steps, "scaling_factor": self.scaling_factor,
                 "shift_factor": 0.0, "metrics": self.metrics,
                 "rng": {"scheme": "per-step SeedSequence(seed, step)", "seed": self.config.train.seed}}
        optimizers = {"optim_ae": self.opt_ae.state_dict()}
        if self.opt_disc is not None:
            optimizers["optim_disc"] = self.opt_disc.state_dict()
        disc = None if self.disc is None else self.disc.state_dict()
        path = save_ae_checkpoint(self.out_dir, config=to_dict(self.config), state=state, model=self.ae.state_dict(),
                                  disc=disc, optimizers=optimizers)
        write_log(self.out_dir, self.log)
        return path

    def run(self) -> dict:
        """Train until train.steps or train.minutes; evaluate, checkpoint, plot and export at the end."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out_dir / "config.json", to_dict(self.config))
        t = self.config.train
        start, smooth = time.monotonic(), None
        bar = progress_bar(t.steps, t.minutes, step=self.step, enabled=self.progress, desc="autoencoder")
        try:
            while self.step < t.steps and not out_of_time(start, t.minutes):
                rec = self.train_step()
                smooth = smoothed(smooth, rec["loss"])
                self._after_step(rec, smooth, start)
                advance(bar, self.step, start, t.minutes, smooth)
        except KeyboardInterrupt:
            self.save()
            raise
        finally:
            bar.close()
        return self.finish(time.monotonic() - start, smooth)

    def _after_step(self, rec: dict, smooth: float | None, start: float) -> None:
        """Log every log_every steps, evaluate every eval_every (with FD every fd_every), checkpoint."""
        t = self.config.train
        if self.step % t.log_every == 0:
            self.log.append({"step": self.step, **rec, "loss_smooth": smooth, "lr": self.lr_at(self.step - 1),
                             "time": time.monotonic() - start})
        if self.step % t.eval_every == 0 or self.step % t.fd_every == 0:
            self.evaluate(with_fd=self.step % t.fd_every == 0)
        if self.step % t.checkpoint_every == 0:
            self.save()

    def finish(self, seconds: float, smooth) -> dict:
        from noisecraft.autoencoder.interop import save_diffusers

        if self.metrics.get("step") != self.step or "scaling_factor" not in self.metrics:
            self.evaluate()
        self.save()
        save_diffusers(self.ae, self.out_dir / "diffusers", sample_size=self.data.data_shape[-1])
        plot_ae_log(self.log, self.out_dir, title=self.config.name)
        return {"step": self.step, "loss": smooth, "bad_steps": self.bad_steps, "seconds": seconds,
                "scaling_factor": self.scaling_factor, **{k: v for k, v in self.metrics.items() if k != "step"}}


def plot_ae_log(log: list[dict], out_dir: Path, *, title: str) -> None:
    """DIR/loss.png (training loss) and DIR/metrics.png (PSNR, SSIM, FD of reconstructions against step)."""
    from noisecraft.viz import plot_loss, pyplot

    train = [r for r in log if r.get("kind") != "eval"]
    if train:
        plot_loss(train, out_dir / "loss.png", title=f"{title}: autoencoder loss")
    evals = [r for r in log if r.get("kind") == "eval"]
    if not evals:
        return
    keys = [k for k in ("psnr", "ssim", "fd") if any(k in r for r in evals)]
    plt = pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    labels = {"psnr": "PSNR (dB)", "ssim": "SSIM", "fd": "FD of reconstructions"}
    for ax, k in zip(axes[0], keys):
        points = [(r["step"], r[k]) for r in evals if k in r]
        ax.plot(*zip(*points), marker="o", lw=1.5)
        ax.set_xlabel("step")
        ax.set_title(labels[k])
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title}: held-out reconstruction metrics")
    fig.tight_layout()
    fig.savefig(out_dir / "metrics.png", dpi=100)
    plt.close(fig)
