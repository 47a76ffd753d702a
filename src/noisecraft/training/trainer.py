"""The training loop, split into steps (DESIGN habit 10).

Determinism: every random draw of step s (batch order, sigma, noise, flips, dropout) comes from
generators seeded by (seed, s), and the batch order of epoch e from a permutation seeded by (seed, e).
The RNG state is therefore a pure function of (seed, step): a checkpoint stores the step, and a resumed
run draws exactly what an uninterrupted run would (tested to bit equality on CPU).
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from noisecraft.config import from_dict, to_dict
from noisecraft.core.denoiser import Denoiser
from noisecraft.core.prediction import Prediction
from noisecraft.errors import CheckpointError, DataError, TrainingDiverged
from noisecraft.schedules.training import build_schedule
from noisecraft.training.checkpoint import (
    CHECKPOINT_FILE,
    atomic_write_bytes,
    atomic_write_json,
    load_checkpoint,
    save_checkpoint,
    unflatten_optimizer,
)
from noisecraft.training.conditioning import Conditioner, adapt_network_to_text, build_network
from noisecraft.training.config import RunConfig
from noisecraft.training.losses import denoising_loss


def build_denoiser(config: RunConfig, net: torch.nn.Module | None = None) -> Denoiser:
    """Network + schedule + prediction of a run config, as a sigma-space denoiser."""
    d = config.diffusion
    net = net if net is not None else build_network(config)  # with text.encoder=trainable: + its encoder
    schedule = build_schedule(d.schedule, **d.schedule_options())
    return Denoiser(net, schedule, Prediction(d.prediction, sigma_data=d.sigma_data))


def load_data(config: RunConfig):
    from noisecraft.data import load_dataset

    c = config.data
    ds = load_dataset(c.dataset, root=c.root, resolution=c.resolution, channels=c.channels, split=c.split,
                      limit=c.limit, seed=config.train.seed)
    if len(ds) < config.train.batch_size:
        raise DataError(f"dataset {c.dataset!r} has {len(ds)} items, fewer than train.batch_size="
                        f"{config.train.batch_size}; lower the batch size")
    return ds


def adapt_network_to_data(config: RunConfig, data_shape: tuple) -> RunConfig:
    """Set the network's input channels / data dim from the data (the data is the source of truth)."""
    if config.model == "unet":
        return replace(config, unet=replace(config.unet, in_channels=data_shape[0]))
    if config.model == "dit":
        from noisecraft.models.dit import dit_for_data

        return replace(config, dit=dit_for_data(config.dit, data_shape))
    return replace(config, mlp=replace(config.mlp, data_dim=data_shape[0]))


def _step_seed(seed: int, step: int, stream: int = 0) -> int:
    return int(np.random.SeedSequence([seed, step, stream]).generate_state(1, dtype=np.uint64)[0] >> 1)


class Trainer:
    """Trains `config` into `out_dir`; `resume=True` continues from out_dir's checkpoint exactly."""

    def __init__(self, config: RunConfig, out_dir: str | Path, *, resume: bool = False, device: str = "cpu",
                 progress: bool = True):
        self.out_dir = Path(out_dir)
        self.device = torch.device(device)
        self.progress = progress
        ckpt = self._open_resume() if resume else None
        if ckpt is not None:
            config = self._resumed_config(ckpt, config)
        self.data = load_data(config)
        self.config = adapt_network_to_text(adapt_network_to_data(config, self.data.data_shape))
        if self.config.train.threads:
            torch.set_num_threads(self.config.train.threads)
        self._build()
        self.evaluator = self._evaluator()
        self.step, self.bad_steps, self.consecutive_bad = 0, 0, 0
        self.log: list[dict] = []
        if ckpt is not None:
            self._restore(ckpt)

    # ----------------------------------------------------------------------------------------- set-up
    def _build(self) -> None:
        t = self.config.train
        torch.manual_seed(t.seed)  # network initialisation
        self.denoiser = build_denoiser(self.config).to(self.device)
        self.net = self.denoiser.net
        self.ema = copy.deepcopy(self.net).requires_grad_(False).eval()
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=t.lr, betas=t.adam_betas,
                                           weight_decay=t.weight_decay, fused=fused or None)
        self.images = self.data.images.to(self.device)
        self.labels = None if self.data.labels is None else self.data.labels.to(self.device)
        self.conditioner = Conditioner(self.config, self.data, self.net, self.device, self.progress)

    def _evaluator(self):
        e = self.config.eval
        if not e.every:
            return None
        from noisecraft.eval.during_training import TrainingEvaluator

        return TrainingEvaluator(self.config, self.out_dir, metrics=e.metrics, every_n_steps=e.every,
                                 num_samples=e.num_samples, features=e.features)

    def _open_resume(self):
        try:
            return load_checkpoint(self.out_dir)
        except CheckpointError as e:
            raise CheckpointError(f"cannot resume: {e}") from None

    def _resumed_config(self, ckpt, requested: RunConfig) -> RunConfig:
        """The checkpoint's config, with only the stopping criteria taken from the request."""
        saved = from_dict(RunConfig, ckpt.config)
        train = replace(saved.train, steps=requested.train.steps, minutes=requested.train.minutes)
        return replace(saved, train=train)

    def _restore(self, ckpt) -> None:
        try:
            self.net.load_state_dict(ckpt.model, strict=True)
            self.ema.load_state_dict(ckpt.ema, strict=True)
            self.optimizer.load_state_dict(unflatten_optimizer(ckpt.optim, ckpt.optim_groups))
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{ckpt.path} does not fit this model: {e}") from None
        s = ckpt.state
        self.step, self.bad_steps = int(s["step"]), int(s["bad_steps"])
        self.log = [r for r in _read_log(self.out_dir) if r["step"] <= self.step]

    # ------------------------------------------------------------------------------------ one step
    def lr_at(self, step: int) -> float:
        """Linear warm-up to train.lr over warmup_steps, then constant."""
        t = self.config.train
        return t.lr * min(1.0, (step + 1) / t.warmup_steps) if t.warmup_steps else t.lr

    def ema_decay_at(self, step: int) -> float:
        return min(self.config.train.ema_decay, (1 + step) / (10 + step))

    def batch_indices(self, step: int) -> torch.Tensor:
        """Indices of step's batch: epoch e = step // batches_per_epoch uses permutation seeded by (seed, e)."""
        n, b = len(self.data), self.config.train.batch_size
        per_epoch = n // b
        epoch, j = divmod(step, per_epoch)
        perm = np.random.default_rng([self.config.train.seed, epoch]).permutation(n)
        return torch.from_numpy(perm[j * b:(j + 1) * b].copy())

    def batch(self, step: int, gen: torch.Generator):
        idx = self.batch_indices(step).to(self.device)
        x0 = self.images[idx]
        if self.config.data.hflip:
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x0 = torch.where(flip.to(self.device).reshape(-1, *[1] * (x0.ndim - 1)), x0.flip(-1), x0)
        cond = self.conditioner(idx, gen)  # labels / caption embeddings, with condition dropout drawn from gen
        return x0, cond

    def loss(self, step: int) -> torch.Tensor:
        """The mean weighted denoising loss of step's batch (all randomness from (seed, step))."""
        gen = torch.Generator().manual_seed(_step_seed(self.config.train.seed, step))
        torch.manual_seed(_step_seed(self.config.train.seed, step, 1))  # dropout
        x0, cond = self.batch(step, gen)
        sigma = self.denoiser.schedule.sample_sigma(x0.shape[0], gen)
        noise = torch.randn(x0.shape, generator=gen).to(self.device)
        d = self.config.diffusion
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.train.bf16):
            per_sample = denoising_loss(self.denoiser, x0, sigma, noise, cond, weighting=d.weighting,
                                        gamma=d.min_snr_gamma)
        return per_sample.float().mean()

    def train_step(self) -> float:
        """One optimiser step; a non-finite loss or gradient skips the update and is counted."""
        self.net.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        loss = self.loss(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        ok = bool(torch.isfinite(loss))
        if ok:
            loss.backward()
            clip = self.config.train.grad_clip or math.inf
            ok = bool(torch.isfinite(torch.nn.utils.clip_grad_norm_(self.net.parameters(), clip)))
        if ok:
            self.optimizer.step()
            self._update_ema()
            self.consecutive_bad = 0
        else:
            self._skip_bad_step(float(loss.detach()))
        self.step += 1
        return float(loss.detach())

    def _skip_bad_step(self, loss: float) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.bad_steps += 1
        self.consecutive_bad += 1
        if self.consecutive_bad >= self.config.train.max_bad_steps:
            raise TrainingDiverged(
                f"{self.consecutive_bad} consecutive non-finite losses/gradients at step {self.step} (last loss "
                f"{loss}); stopped. The last good checkpoint in {self.out_dir} is intact; try a lower train.lr, "
                f"train.bf16=false, or check the data for NaN."
            )

    @torch.no_grad()
    def _update_ema(self) -> None:
        w = 1 - self.ema_decay_at(self.step)
        ema, live = list(self.ema.parameters()), list(self.net.parameters())
        torch._foreach_lerp_(ema, live, w)
        for b_ema, b in zip(self.ema.buffers(), self.net.buffers()):
            b_ema.copy_(b)

    # ---------------------------------------------------------------------------------- the loop
    def save(self) -> Path:
        state = {"step": self.step, "bad_steps": self.bad_steps,
                 "data_position": {"epoch": self.step // (len(self.data) // self.config.train.batch_size),
                                   "batch": self.step % (len(self.data) // self.config.train.batch_size)},
                 "rng": {"scheme": "per-step SeedSequence(seed, step)", "seed": self.config.train.seed}}
        path = save_checkpoint(self.out_dir, config=to_dict(self.config), state=state, model=self.net.state_dict(),
                               ema=self.ema.state_dict(), optimizer=self.optimizer.state_dict())
        _write_log(self.out_dir, self.log)
        return path

    def maybe_evaluate(self) -> dict | None:
        """Score the EMA model every eval.every steps; keep its checkpoint in best/ when it is the best."""
        if self.evaluator is None:
            return None
        result = self.evaluator.maybe_evaluate(self.step, build_denoiser(self.config, self.ema).eval(),
                                               self.data.data_shape)
        if result is not None and result["is_best"]:
            path = self.save()
            (self.out_dir / "best").mkdir(exist_ok=True)
            atomic_write_bytes(self.out_dir / "best" / CHECKPOINT_FILE, path.read_bytes())
        return result

    def _finishing(self, start: float) -> bool:
        """True when the step just taken is the run's last (so it is always logged)."""
        t = self.config.train
        return self.step >= t.steps or _out_of_time(start, t.minutes)

    def run(self) -> dict:
        """Train until train.steps or train.minutes; checkpoint periodically and at the end."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out_dir / "config.json", to_dict(self.config))
        t = self.config.train
        start, bar, ema_loss = time.monotonic(), _progress_bar(t, self.step, self.progress), None
        try:
            while self.step < t.steps and not _out_of_time(start, t.minutes):
                loss = self.train_step()
                if math.isfinite(loss):
                    ema_loss = loss if ema_loss is None else 0.98 * ema_loss + 0.02 * loss
                if self.step % t.log_every == 0 or self._finishing(start):
                    self.log.append({"step": self.step, "loss": loss, "loss_smooth": ema_loss,
                                     "lr": self.lr_at(self.step - 1), "time": time.monotonic() - start})
                if self.step % t.checkpoint_every == 0:
                    self.save()
                self.maybe_evaluate()
                _advance(bar, self.step, start, t, ema_loss)
        except KeyboardInterrupt:
            self.save()
            raise
        finally:
            bar.close()
        self.save()
        return {"step": self.step, "loss": ema_loss, "bad_steps": self.bad_steps,
                "seconds": time.monotonic() - start}


def _out_of_time(start: float, minutes: float | None) -> bool:
    """True once `minutes` of wall time have passed since `start` (never when minutes is None)."""
    return minutes is not None and time.monotonic() - start >= minutes * 60


def _progress_bar(t, step: int, enabled: bool):
    from tqdm.auto import tqdm

    if t.minutes is not None:
        return tqdm(total=round(t.minutes * 60), unit="s", desc="training", disable=not enabled,
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f}s [{postfix}]")
    return tqdm(total=t.steps, initial=step, unit="step", desc="training", disable=not enabled)


def _advance(bar, step: int, start: float, t, loss) -> None:
    if bar.disable:
        return
    if t.minutes is not None:
        bar.n = min(bar.total, time.monotonic() - start)
    else:
        bar.n = step
    if step % 10 == 0:
        bar.set_postfix_str(f"step {step}, loss {loss:.4f}" if loss is not None else f"step {step}", refresh=False)
    bar.refresh()


def _read_log(out_dir: Path) -> list[dict]:
    path = out_dir / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_log(out_dir: Path, log: list[dict]) -> None:
    atomic_write_bytes(out_dir / "log.jsonl", "".join(json.dumps(r) + "\n" for r in log).encode())
