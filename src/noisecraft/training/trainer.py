"""The training loop of a diffusion model: a short loop over steps, composed of the training pieces.

    Trainer(config, out_dir).run()      # train.steps or train.minutes; checkpoints in out_dir

One step (`train_step`): draw the global batch of step s (`draw`), accumulate the gradients of this
process's micro-batches (`loss`, under autocast), all-reduce them, clip, check and step (precision.py),
then update the EMA and the post-hoc EMA profiles (ema.py). After a step the loop logs, snapshots the
post-hoc EMA, checkpoints (state.py) and calls its callbacks (evaluation during training:
`noisecraft.training.evaluation.EvaluationCallback`); the progress bar, time limit and Ctrl-C are
progress.py's.

Determinism: every random draw of step s (batch order, sigma, noise, flips, dropout) comes from
generators seeded by (seed, s), and the batch order of epoch e from a permutation seeded by (seed, e)
(batches.py). The RNG state is therefore a pure function of (seed, step): a checkpoint stores the step, and
a resumed run draws exactly what an uninterrupted run would (tested to bit equality on CPU).

Scale (see training/distributed.py): under torchrun the global batch of step s is cut into
world x grad_accum micro-batches; sigma and noise are drawn for the whole global batch and sliced, so
the result does not depend on the number of processes or micro-batches (to float rounding). Speed
options (train.bf16/fp16/compile/grad_checkpointing/fused_adam) are switches in TrainConfig.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from noisecraft.build import adapt_config, build_denoiser
from noisecraft.checkpoint import CHECKPOINT_FILE, save_checkpoint
from noisecraft.conditions import conditions_for
from noisecraft.conditions.base import PIXELS
from noisecraft.config import to_dict
from noisecraft.core.losses import denoising_loss
from noisecraft.errors import CheckpointError
from noisecraft.files import atomic_write_json
from noisecraft.runconfig import RunConfig
from noisecraft.training import distributed
from noisecraft.training.batches import BatchOrder, chain_hash, load_data, step_seed
from noisecraft.training.distributed import Dist, micro_rows, micro_slice
from noisecraft.training.ema import ema_copy, ema_decay, phema_every, power_ema, snapshot_phema, update_ema
from noisecraft.training.posthoc_ema import power_beta, sigma_rel_to_gamma
from noisecraft.training.precision import (
    OVERFLOW,
    STEPPED,
    adamw,
    autocast,
    grad_scaler,
    guarded_update,
    halved_micro_batch,
    raise_if_diverged,
)
from noisecraft.training.progress import advance, deferred_interrupt, out_of_time, progress_bar, smoothed
from noisecraft.training.repa import null_tap, repa_for
from noisecraft.training.state import full_state, open_resume, read_log, restore_weights, resumed_config, write_log

DIVERGED_HINT = "try a lower train.lr, train.bf16=false, or check the data for NaN"


class Trainer:
    """A diffusion training run: trains `config` into `out_dir`; `resume=True` continues from out_dir's
    checkpoint exactly. `device` is the torch device (under torchrun each process takes its own GPU);
    `progress` shows a progress bar (rank 0)."""

    def __init__(self, config: RunConfig, out_dir: str | Path, *, resume: bool = False, device: str = "cpu",
                 progress: bool = True):
        self.out_dir = Path(out_dir)
        self.device = torch.device(distributed.setup(device))  # joins a torchrun/accelerate launch, if any
        self.dist = Dist.current()
        self.progress = progress and self.dist.is_main
        ckpt = open_resume(self.out_dir) if resume else None
        if ckpt is not None:
            config = resumed_config(ckpt, config)
        self.data = load_data(config)
        self.config = adapt_config(config, self.data.data_shape)
        if self.config.train.threads:
            torch.set_num_threads(self.config.train.threads)
        self._build()
        self._setup_callbacks()
        self.step, self.bad_steps, self.consecutive_bad = 0, 0, 0
        self.scaler_skipped = 0  # fp16 steps skipped by the grad scaler (overflow; not counted as bad)
        self.accum = self.config.train.grad_accum  # micro-batches per process (doubles after an OOM)
        self.data_hash = ""  # SHA-256 chain over the batch indices of every step taken (the data order)
        self.order = BatchOrder(len(self.data), self.config.train.batch_size, self.config.train.seed)
        self._drawn = None  # (step, draw(step)) of the step in progress
        self.log: list[dict] = []
        if ckpt is not None:
            self._restore(ckpt)

    # ----------------------------------------------------------------------------------------- set-up
    def _build(self) -> None:
        """Network (seeded initialisation), EMA, wrapping, optimiser, scaler, data on the device, conditions."""
        t = self.config.train
        torch.manual_seed(t.seed)  # network initialisation
        self.denoiser = build_denoiser(self.config).to(self.device)
        self.net = self.denoiser.net
        # the run's conditions (noisecraft.conditions): read from the data here, prepared once in run() (e.g. a
        # layout planner), drawn per batch in batch(). Set up before the averages and the optimiser are made,
        # since a condition may load and freeze weights (a ControlNet's base run): only parameters that require
        # gradients are optimised
        self.conditions = conditions_for(self.config)
        self.conditions.setup(self.data, self.net, self.device, self.progress)
        # representation alignment (train.repa, training/repa.py): a frozen encoder and a projector trained with
        # the network (its parameters after the network's in the optimiser); None when off
        self.repa = repa_for(t.repa, self.net, self.data.data_shape, self.device,
                             latent=bool(self.config.data.autoencoder), fsdp=t.fsdp)
        self.trained = self.net if self.repa is None else torch.nn.ModuleList([self.net, self.repa.projector])
        self.ema = ema_copy(self.net)
        self.phema = power_ema(self.net, t)
        averages = [self.ema, *(self.phema.models if self.phema else [])]
        self.model, self.train_denoiser = distributed.parallelize(self.denoiser, averages, t, self.dist, self.device)
        self.optimizer = adamw([p for p in self.trained.parameters() if p.requires_grad], t, self.device)
        self.scaler = grad_scaler(self.device, t)
        self.images = self.data.images.to(self.device)
        flipped = (self.data.attributes or {}).get("latents_hflip")  # latent runs: E(flip(x)), not flip(E(x))
        self.images_hflip = None if flipped is None else flipped.to(self.device)
        pixels = (self.data.attributes or {}).get(PIXELS) if self.config.data.autoencoder else None
        self.pixels = None if pixels is None else pixels.to(self.device)  # for conditions made in pixel space

    def _setup_callbacks(self) -> None:
        """After-step callbacks, each called as callback(trainer): evaluation during training when eval.every
        is set (its TrainingEvaluator, `self.evaluator`, lives on rank 0)."""
        self.callbacks, self.evaluator = [], None
        if self.config.eval.every:
            from noisecraft.training.evaluation import EvaluationCallback

            evaluation = EvaluationCallback.from_config(self.config, self.out_dir, main=self.dist.is_main)
            self.callbacks.append(evaluation)
            self.evaluator = evaluation.evaluator

    # -------------------------------------------------------------------------------- saved state
    def state_dict(self) -> dict:
        """The run's counters, data position and RNG scheme (with the fp16 scaler's state), as checkpointed."""
        state = {"step": self.step, "bad_steps": self.bad_steps, "scaler_skipped": self.scaler_skipped,
                 "data_position": self.order.position(self.step), "data_hash": self.data_hash,
                 "world_size": self.dist.world, "grad_accum": self.accum,
                 "rng": {"scheme": "per-step SeedSequence(seed, step)", "seed": self.config.train.seed},
                 "data_shape": list(self.data.data_shape)}  # one sample's shape (latents for a latent run)
        if self.scaler.is_enabled():
            state["grad_scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, s: dict) -> None:
        """Restore the counters of `state_dict()` (and a micro-batch that an OOM made smaller, same world)."""
        self.step, self.bad_steps = int(s["step"]), int(s["bad_steps"])
        self.scaler_skipped, self.data_hash = int(s.get("scaler_skipped", 0)), str(s.get("data_hash", ""))
        if self.scaler.is_enabled() and "grad_scaler" in s:
            self.scaler.load_state_dict(s["grad_scaler"])
        if s.get("world_size") == self.dist.world:
            self.accum = max(self.accum, int(s.get("grad_accum", self.accum)))

    def _restore(self, ckpt) -> None:
        try:
            if self.repa is not None:  # before the optimiser state, which covers the projector too
                if ckpt.repa is None:
                    raise KeyError("the REPA projector (train.repa) is missing from the checkpoint")
                self.repa.projector.load_state_dict(ckpt.repa, strict=True)
            restore_weights(ckpt, self.net, self.ema, self.phema, self.optimizer, fsdp=self.config.train.fsdp)
            self.load_state_dict(ckpt.state)
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{ckpt.path} does not fit this model: {e}") from None
        self.log = [r for r in read_log(self.out_dir) if r["step"] <= self.step]

    def save(self) -> Path:
        """Write the consolidated checkpoint and the log (rank 0 only; collective under FSDP), then a barrier."""
        model, ema, optim, phema = full_state(self.net, self.ema, self.optimizer, self.phema,
                                              fsdp=self.config.train.fsdp)
        try:
            if self.dist.is_main:
                save_checkpoint(self.out_dir, config=to_dict(self.config), state=self.state_dict(), model=model,
                                ema=ema, optimizer=optim, phema=phema,
                                repa=None if self.repa is None else self.repa.projector.state_dict())
                write_log(self.out_dir, self.log)
        finally:
            self.dist.barrier()
        return self.out_dir / CHECKPOINT_FILE

    def plain_ema(self):
        """The EMA network as an ordinary module on rank 0 (gathered from the shards under FSDP; None on the
        other ranks)."""
        if not self.config.train.fsdp:
            return self.ema
        state = distributed.full_model_state(self.ema)
        if not self.dist.is_main:
            return None
        net = build_denoiser(self.config).net
        net.load_state_dict(state)
        return net.to(self.device)

    _plain_ema = plain_ema  # the old name (tests/autoencoder/test_latent_runs.py)

    # ------------------------------------------------------------------------------------ one step
    def lr_at(self, step: int) -> float:
        """Linear warm-up to train.lr over warmup_steps, then constant."""
        t = self.config.train
        return t.lr * min(1.0, (step + 1) / t.warmup_steps) if t.warmup_steps else t.lr

    def ema_decay_at(self, step: int) -> float:
        """The EMA decay of the update after `step` (0-based): ema.ema_decay with train.ema_decay, or with
        train.ema_sigma_rel > 0 the power-function EMA's (1 - 1/t)^(gamma + 1) at t = step + 1 (Karras et al.
        2024, eq. 3): an average over a fixed fraction of the run however long it runs."""
        t = self.config.train
        if t.ema_sigma_rel:
            return power_beta(sigma_rel_to_gamma(t.ema_sigma_rel), step + 1)
        return ema_decay(step, t.ema_decay)

    def batch_indices(self, step: int) -> torch.Tensor:
        """Indices of step's batch: epoch e = step // batches_per_epoch uses permutation seeded by (seed, e)."""
        return self.order(step)

    def batch(self, step: int, gen: torch.Generator):
        """(x0, cond) of step's global batch: the images (flipped with probability 1/2 when data.hflip),
        then their conditions, drawing from `gen` in that order."""
        idx = self.batch_indices(step).to(self.device)
        x0 = self.images[idx]
        pixels = None if self.pixels is None else self.pixels[idx]  # a latent run's pixel images (see setup)
        if self.config.data.hflip:
            flip = torch.rand(len(idx), generator=gen).to(self.device) < 0.5
            flipped = x0.flip(-1) if self.images_hflip is None else self.images_hflip[idx]
            x0 = torch.where(flip.reshape(-1, *[1] * (x0.ndim - 1)), flipped, x0)
            if pixels is not None:
                pixels = torch.where(flip.reshape(-1, *[1] * (pixels.ndim - 1)), pixels.flip(-1), pixels)
        cond = self.conditions.batch(idx, gen, x0, pixels)  # condition dropout, then image-made conditions, from gen
        return x0, cond

    def draw(self, step: int):
        """Everything random about step's global batch: (x0, cond, sigma, noise) for all batch_size rows,
        from generators seeded by (seed, step). Each process slices its micro-batches out of it."""
        if self._drawn is not None and self._drawn[0] == step:
            return self._drawn[1]
        gen = torch.Generator().manual_seed(step_seed(self.config.train.seed, step, 0))
        x0, cond = self.batch(step, gen)
        sigma = self.denoiser.schedule.sample_sigma(x0.shape[0], gen)
        noise = torch.randn(x0.shape, generator=gen).to(self.device)
        if self.conditions.projects:  # e.g. a molecule run's zero centre-of-mass noise (Condition.project)
            noise = self.conditions.project(noise, cond)
        self._drawn = (step, (x0, cond, sigma, noise))
        return self._drawn[1]

    def loss(self, step: int, chunk: int = 0, chunks: int = 1) -> torch.Tensor:
        """The mean weighted denoising loss of micro-batch `chunk` of `chunks` equal parts of step's global
        batch (default: the whole batch); all randomness from (seed, step)."""
        x0, cond, sigma, noise = self.draw(step)
        rows = micro_slice(x0.shape[0], chunk, chunks)
        torch.manual_seed(step_seed(self.config.train.seed, step, 1 + chunk))  # dropout
        d = self.config.diffusion
        with autocast(self.device, self.config.train), (null_tap() if self.repa is None else self.repa.tap()) as tap:
            per_sample = denoising_loss(self.train_denoiser, x0[rows], sigma[rows], noise[rows],
                                        micro_rows(cond, rows, x0.shape[0]), weighting=d.weighting,
                                        gamma=d.min_snr_gamma)
            if tap is not None:  # + lambda L_REPA (Yu et al. 2025, Eq. 9)
                per_sample = per_sample + self.repa.loss(tap, x0[rows])
        return per_sample.float().mean()

    def train_step(self) -> float:
        """One optimiser step over the global batch: this process's micro-batches accumulated, gradients
        averaged over processes. A non-finite loss or gradient skips the update and is counted."""
        self.net.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        loss = self._accumulate()
        self._update(loss)
        self.data_hash = chain_hash(self.data_hash, self.batch_indices(self.step))
        self._drawn = None
        self.step += 1
        return float(loss)

    def _accumulate(self) -> torch.Tensor:
        """Gradients of the step's loss; on out-of-memory, halve the micro-batch and start the step over."""
        while True:
            self.optimizer.zero_grad(set_to_none=True)
            try:
                return self._forward_backward()
            except torch.OutOfMemoryError as e:
                self.optimizer.zero_grad(set_to_none=True)
                self.accum = halved_micro_batch(e, step=self.step, accum=self.accum, world=self.dist.world,
                                                train=self.config.train, device=self.device)

    def _forward_backward(self) -> torch.Tensor:
        """sum over micro-batches m of grad(loss_m / A), all-reduced (mean) over processes on the last one;
        returns the global mean loss (the same number on every rank)."""
        A, world = self.accum, self.dist.world
        total = torch.zeros((), device=self.device)
        for m in range(A):
            with distributed.no_sync(self.model, self.net, sync=m == A - 1):
                loss = self.loss(self.step, self.dist.rank * A + m, world * A)
                self.scaler.scale(loss / A).backward()
            total += loss.detach() / A
        if self.repa is not None and world > 1:  # the projector is outside DDP: average its gradients here
            for p in self.repa.projector.parameters():
                if p.grad is not None:
                    p.grad.copy_(self.dist.mean(p.grad))
        return self.dist.mean(total)

    def _update(self, loss: torch.Tensor) -> None:
        """Clip, check and step (precision.guarded_update), then the moving averages; count skipped steps."""
        outcome = guarded_update(self.optimizer, self.scaler, self.trained, loss, self.config.train.grad_clip)
        if outcome == STEPPED:
            update_ema(self.ema, self.net, self.ema_decay_at(self.step))
            if self.phema is not None:
                self.phema.update(self.net, self.step + 1)  # t = optimiser steps taken, including this one
            self.consecutive_bad = 0
        elif outcome == OVERFLOW:
            self.scaler_skipped += 1
        else:  # a non-finite loss or gradient: a bad step
            self.optimizer.zero_grad(set_to_none=True)
            self.bad_steps, self.consecutive_bad = self.bad_steps + 1, self.consecutive_bad + 1
            raise_if_diverged(self.consecutive_bad, self.config.train.max_bad_steps, step=self.step,
                              out_dir=self.out_dir, last=f"non-finite {outcome}, loss {float(loss)}",
                              hint=DIVERGED_HINT)

    # ---------------------------------------------------------------------------------- the loop
    def run(self) -> dict:
        """Train until train.steps or train.minutes; checkpoint periodically and at the end."""
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.out_dir / "config.json", to_dict(self.config))
            self.conditions.prepare(self.out_dir, self.progress)  # once per run, kept when resuming
        self.dist.barrier()
        t = self.config.train
        start, smooth = time.monotonic(), None
        bar = progress_bar(t.steps, t.minutes, step=self.step, enabled=self.progress)
        try:
            with deferred_interrupt() as interrupt:
                while self.step < t.steps and not self._should_stop(start, interrupt):
                    loss = self.train_step()
                    smooth = smoothed(smooth, loss)
                    self._after_step(loss, smooth, start)
                    advance(bar, self.step, start, t.minutes, smooth)
        finally:
            bar.close()
        if self.phema is not None and self.step > 0 and self.step % phema_every(t):
            snapshot_phema(self.phema, self.out_dir, self.step, self.dist, fsdp=t.fsdp)  # the final profiles
        self.save()
        return {"step": self.step, "loss": smooth, "bad_steps": self.bad_steps,
                "scaler_skipped": self.scaler_skipped, "seconds": time.monotonic() - start}

    def _should_stop(self, start: float, interrupt: dict) -> bool:
        """Agreed by all ranks before a step: out of time (stop), or Ctrl-C (save, then KeyboardInterrupt)."""
        late, interrupted = self.dist.any([out_of_time(start, self.config.train.minutes), interrupt["hit"]],
                                          self.device)
        if interrupted:  # the step in progress was finished; save and stop
            self.save()
            raise KeyboardInterrupt
        return late

    def _after_step(self, loss: float, smooth: float | None, start: float) -> None:
        """Log (every log_every steps and the last), snapshot the post-hoc EMA, checkpoint, call the callbacks."""
        t = self.config.train
        if self.step % t.log_every == 0 or self.step >= t.steps or out_of_time(start, t.minutes):
            self.log.append(self._log_record(loss, smooth, start))
        if self.phema is not None and self.step % phema_every(t) == 0:
            snapshot_phema(self.phema, self.out_dir, self.step, self.dist, fsdp=t.fsdp)
        if self.step % t.checkpoint_every == 0:
            self.save()
        for callback in self.callbacks:
            callback(self)

    def _log_record(self, loss: float, smooth: float | None, start: float) -> dict:
        """One log.jsonl record of the step just taken."""
        record = {"step": self.step, "loss": loss, "loss_smooth": smooth, "lr": self.lr_at(self.step - 1),
                  "time": time.monotonic() - start, "bad_steps": self.bad_steps}
        if self.config.train.fp16:
            record["scaler_skipped"] = self.scaler_skipped
            record["grad_scale"] = float(self.scaler.get_scale())
        if self.accum != self.config.train.grad_accum:
            record["grad_accum"] = self.accum  # raised after an out-of-memory error
        return record
