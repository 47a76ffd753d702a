"""The training loop, split into steps (DESIGN habit 10).

Determinism: every random draw of step s (batch order, sigma, noise, flips, dropout) comes from
generators seeded by (seed, s), and the batch order of epoch e from a permutation seeded by (seed, e).
The RNG state is therefore a pure function of (seed, step): a checkpoint stores the step, and a resumed
run draws exactly what an uninterrupted run would (tested to bit equality on CPU).

Scale (see training/distributed.py): under torchrun the global batch of step s is cut into
world x grad_accum micro-batches; sigma and noise are drawn for the whole global batch and sliced, so
the result does not depend on the number of processes or micro-batches (to float rounding). Speed
options (train.bf16/fp16/compile/grad_checkpointing/fused_adam) are switches in TrainConfig.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import signal
import threading
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from noisecraft.build import adapt_config, build_denoiser
from noisecraft.config import from_dict, to_dict
from noisecraft.core.denoiser import Denoiser
from noisecraft.errors import CheckpointError, ConfigError, DataError, NoisecraftError, TrainingDiverged
from noisecraft.training import distributed
from noisecraft.training.checkpoint import (
    CHECKPOINT_FILE,
    atomic_write_bytes,
    atomic_write_json,
    load_checkpoint,
    save_checkpoint,
    unflatten_optimizer,
)
from noisecraft.training.conditioning import Conditioner
from noisecraft.training.config import RunConfig
from noisecraft.training.distributed import Dist, local_tensors, micro_slice
from noisecraft.training.losses import denoising_loss
from noisecraft.training.posthoc_ema import PowerEMA, write_snapshot


def load_data(config: RunConfig):
    from noisecraft.data import load_dataset

    c = config.data
    ds = load_dataset(c.dataset, root=c.root, resolution=c.resolution, channels=c.channels, split=c.split,
                      limit=c.limit, seed=config.train.seed, count=c.count)
    if c.autoencoder:  # latent diffusion: cached scaled latents of the images (noisecraft.autoencoder.latents)
        from noisecraft.autoencoder.latents import encode_dataset, resolve_autoencoder_path

        ds = encode_dataset(ds, resolve_autoencoder_path(c.autoencoder), hflip=c.hflip)  # + flipped images' latents
    if len(ds) < config.train.batch_size:
        raise DataError(f"dataset {c.dataset!r} has {len(ds)} items, fewer than train.batch_size="
                        f"{config.train.batch_size}; lower the batch size")
    return ds


# TrainConfig fields a resumed run takes from the request: they change how, not what, is computed.
_EXECUTION = ("threads", "grad_accum", "compile", "grad_checkpointing", "fused_adam", "fsdp", "oom_retry")


def _step_seed(seed: int, step: int, stream: int = 0) -> int:
    return int(np.random.SeedSequence([seed, step, stream]).generate_state(1, dtype=np.uint64)[0] >> 1)


class Trainer:
    """Trains `config` into `out_dir`; `resume=True` continues from out_dir's checkpoint exactly."""

    def __init__(self, config: RunConfig, out_dir: str | Path, *, resume: bool = False, device: str = "cpu",
                 progress: bool = True):
        self.out_dir = Path(out_dir)
        self.device = torch.device(distributed.setup(device))  # joins a torchrun/accelerate launch, if any
        self.dist = Dist.current()
        self.progress = progress and self.dist.is_main
        ckpt = self._open_resume() if resume else None
        if ckpt is not None:
            config = self._resumed_config(ckpt, config)
        self.data = load_data(config)
        self.config = adapt_config(config, self.data.data_shape)
        if self.config.train.threads:
            torch.set_num_threads(self.config.train.threads)
        self._build()
        self.evaluator = self._evaluator() if self.dist.is_main else None
        self.step, self.bad_steps, self.consecutive_bad = 0, 0, 0
        self.scaler_skipped = 0  # fp16 steps skipped by the grad scaler (overflow; not counted as bad)
        self.accum = self.config.train.grad_accum  # micro-batches per process (doubles after an OOM)
        self.data_hash = ""  # SHA-256 chain over the batch indices of every step taken (the data order)
        self._drawn = self._perm = None
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
        self.phema = PowerEMA(self.net, t.phema_sigma_rels) if t.phema_sigma_rels else None
        self.train_denoiser = self._parallelize()
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=t.lr, betas=t.adam_betas,
                                           weight_decay=t.weight_decay, fused=self._fused_adam())
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=t.fp16)
        self.images = self.data.images.to(self.device)
        flipped = (self.data.attributes or {}).get("latents_hflip")  # latent runs: E(flip(x)), not flip(E(x))
        self.images_hflip = None if flipped is None else flipped.to(self.device)
        self.labels = None if self.data.labels is None else self.data.labels.to(self.device)
        self.conditioner = Conditioner(self.config, self.data, self.net, self.device, self.progress)

    def _fit_layout_planner(self) -> None:
        """Layout-conditioned runs: train the prompt -> boxes planner once (rank 0; kept when resuming)."""
        from noisecraft.text.layout import PLANNER_FILE

        layout = self.conditioner.layout
        if layout is not None and not (self.out_dir / PLANNER_FILE).is_file():
            layout.fit_planner(self.config, self.out_dir, self.progress)

    def _parallelize(self) -> Denoiser:
        """Speed options and data-parallel wrapping; returns the denoiser the training forward runs through
        (self.denoiser itself, or one around the DDP wrapper whose forward/backward syncs gradients)."""
        t = self.config.train
        if t.grad_checkpointing:
            distributed.checkpoint_blocks(self.net)
        if t.fsdp:
            if self.dist.world == 1:
                raise ConfigError("train.fsdp=true needs a distributed launch, e.g. torchrun --nproc_per_node G "
                                  "-m noisecraft train ... train.fsdp=true")
            for module in [self.net, self.ema, *(self.phema.models if self.phema else [])]:
                distributed.fully_shard_blocks(module)
        self.model = self.net if self.dist.world == 1 or t.fsdp else distributed.ddp(self.net, self.device)
        if t.compile:
            self.net.compile()  # in place: parameter names and state_dict keys stay the same
        if self.model is self.net:
            return self.denoiser
        return Denoiser(self.model, self.denoiser.schedule, self.denoiser.prediction)

    def _fused_adam(self) -> bool | None:
        """train.fused_adam: None -> the fused kernel on CUDA (torch's default elsewhere); true -> fused on
        any device torch has it for (CUDA, CPU, MPS, XPU); false -> never."""
        fused = self.config.train.fused_adam
        if fused is None:
            return True if self.device.type == "cuda" else None
        return fused or None

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
        """The checkpoint's config, with the stopping criteria and the execution options (which leave the
        mathematics alone: process layout, accumulation, compile, checkpointing, threads) from the request."""
        saved = from_dict(RunConfig, ckpt.config)
        r = requested.train
        train = replace(saved.train, steps=r.steps, minutes=r.minutes, **{k: getattr(r, k) for k in _EXECUTION})
        return replace(saved, train=train)

    def _restore(self, ckpt) -> None:
        try:
            optim = unflatten_optimizer(ckpt.optim, ckpt.optim_groups)
            self._load_module(self.net, ckpt.model, optim)
            self._load_module(self.ema, ckpt.ema)
            if self.phema is not None:
                if ckpt.phema is None or len(ckpt.phema) != len(self.phema.models):
                    raise KeyError("the post-hoc EMA profiles of the config are missing from the checkpoint")
                for k, model in enumerate(self.phema.models):
                    self._load_module(model, ckpt.phema[str(k)])
            s = ckpt.state
            self.step, self.bad_steps = int(s["step"]), int(s["bad_steps"])
            self.scaler_skipped, self.data_hash = int(s.get("scaler_skipped", 0)), str(s.get("data_hash", ""))
            if self.scaler.is_enabled() and "grad_scaler" in s:
                self.scaler.load_state_dict(s["grad_scaler"])
            if s.get("world_size") == self.dist.world:  # keep a micro-batch that an OOM made smaller
                self.accum = max(self.accum, int(s.get("grad_accum", self.accum)))
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{ckpt.path} does not fit this model: {e}") from None
        self.log = [r for r in _read_log(self.out_dir) if r["step"] <= self.step]

    def _load_module(self, module, state: dict, optim: dict | None = None) -> None:
        if self.config.train.fsdp:
            distributed.load_full_state(module, state, self.optimizer if optim else None, optim)
            return
        module.load_state_dict(state, strict=True)
        if optim is not None:
            self.optimizer.load_state_dict(optim)

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
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.config.train.seed, epoch]).permutation(n))
        return torch.from_numpy(self._perm[1][j * b:(j + 1) * b].copy())

    def batch(self, step: int, gen: torch.Generator):
        idx = self.batch_indices(step).to(self.device)
        x0 = self.images[idx]
        if self.config.data.hflip:
            flip = torch.rand(len(idx), generator=gen) < 0.5
            flipped = x0.flip(-1) if self.images_hflip is None else self.images_hflip[idx]
            x0 = torch.where(flip.to(self.device).reshape(-1, *[1] * (x0.ndim - 1)), flipped, x0)
        cond = self.conditioner(idx, gen)  # labels / caption embeddings, with condition dropout drawn from gen
        return x0, cond

    def draw(self, step: int):
        """Everything random about step's global batch: (x0, cond, sigma, noise) for all batch_size rows,
        from generators seeded by (seed, step). Each process slices its micro-batches out of it."""
        if self._drawn is not None and self._drawn[0] == step:
            return self._drawn[1]
        gen = torch.Generator().manual_seed(_step_seed(self.config.train.seed, step))
        x0, cond = self.batch(step, gen)
        sigma = self.denoiser.schedule.sample_sigma(x0.shape[0], gen)
        noise = torch.randn(x0.shape, generator=gen).to(self.device)
        self._drawn = (step, (x0, cond, sigma, noise))
        return self._drawn[1]

    def loss(self, step: int, chunk: int = 0, chunks: int = 1) -> torch.Tensor:
        """The mean weighted denoising loss of micro-batch `chunk` of `chunks` equal parts of step's global
        batch (default: the whole batch); all randomness from (seed, step)."""
        x0, cond, sigma, noise = self.draw(step)
        rows = micro_slice(x0.shape[0], chunk, chunks)
        torch.manual_seed(_step_seed(self.config.train.seed, step, 1 + chunk))  # dropout
        d = self.config.diffusion
        with self._autocast():
            per_sample = denoising_loss(self.train_denoiser, x0[rows], sigma[rows], noise[rows],
                                        _rows(cond, rows, x0.shape[0]), weighting=d.weighting, gamma=d.min_snr_gamma)
        return per_sample.float().mean()

    def _autocast(self):
        t = self.config.train
        dtype = torch.bfloat16 if t.bf16 else torch.float16 if t.fp16 else None
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def train_step(self) -> float:
        """One optimiser step over the global batch: this process's micro-batches accumulated, gradients
        averaged over processes. A non-finite loss or gradient skips the update and is counted."""
        self.net.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        loss = self._accumulate()
        self._apply_update(loss)
        idx = self.batch_indices(self.step).numpy().astype(np.int64)
        self.data_hash = hashlib.sha256(self.data_hash.encode() + idx.tobytes()).hexdigest()
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
                self._halve_micro_batch(e)

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
        return self.dist.mean(total)

    def _halve_micro_batch(self, error: Exception) -> None:
        """Out of memory: keep the global batch, halve the micro-batch, double the accumulation."""
        t, world = self.config.train, self.dist.world
        micro = t.batch_size // (world * self.accum)
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if not t.oom_retry or world > 1 or micro < 2 or micro % 2:
            why = "automatic halving is for single-process runs" if world > 1 else \
                "train.oom_retry is off" if not t.oom_retry else f"{micro} cannot be halved"
            raise NoisecraftError(f"out of memory at step {self.step} with a micro-batch of {micro} per process "
                                  f"({why}); lower train.batch_size or raise train.grad_accum (now {self.accum}). "
                                  f"{type(error).__name__}: {error}") from None
        self.accum *= 2
        warnings.warn(f"out of memory at step {self.step} with a micro-batch of {micro}: continuing with "
                      f"{micro // 2} x {self.accum} accumulated (the same global batch of {t.batch_size})",
                      RuntimeWarning, stacklevel=2)

    def _apply_update(self, loss: torch.Tensor) -> None:
        """Clip, check, step. fp16 overflow in the gradients is the grad scaler's business (skipped and
        counted in scaler_skipped); any other non-finite loss or gradient is a bad step."""
        t = self.config.train
        self.scaler.unscale_(self.optimizer)  # (no-op without fp16)
        params = [p for p in self.net.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        full = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP: a DTensor
        finite_loss, finite_grad = bool(torch.isfinite(loss)), bool(torch.isfinite(full))
        if finite_grad and t.grad_clip:  # (clipping by a non-finite norm would turn every gradient NaN)
            torch.nn.utils.clip_grads_with_norm_(params, t.grad_clip, norm)
        if finite_loss and not finite_grad and self.scaler.is_enabled():
            self.scaler.step(self.optimizer)  # finds the inf and skips
            self.scaler.update()  # lowers the scale
            self.scaler_skipped += 1
            return
        if not (finite_loss and finite_grad):
            where = "loss" if not finite_loss else f"gradient (first in {self._first_bad_grad()})"
            if self.scaler.is_enabled():
                self.scaler.update()
            self._skip_bad_step(float(loss), where)
            return
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._update_ema()
        self.consecutive_bad = 0

    def _first_bad_grad(self) -> str | None:
        for name, p in self.net.named_parameters():
            g = p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad
            if g is not None and not bool(torch.isfinite(g).all()):
                return name
        return None

    def _skip_bad_step(self, loss: float, where: str = "loss") -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.bad_steps += 1
        self.consecutive_bad += 1
        if self.consecutive_bad >= self.config.train.max_bad_steps:
            raise TrainingDiverged(
                f"{self.consecutive_bad} consecutive non-finite losses/gradients at step {self.step} (last: "
                f"non-finite {where}, loss {loss}); stopped. The last good checkpoint in {self.out_dir} is intact; "
                f"try a lower train.lr, train.bf16=false, or check the data for NaN."
            )

    @torch.no_grad()
    def _update_ema(self) -> None:
        w = 1 - self.ema_decay_at(self.step)
        ema, live = local_tensors(self.ema.parameters()), local_tensors(self.net.parameters())
        torch._foreach_lerp_(ema, live, w)
        for b_ema, b in zip(self.ema.buffers(), self.net.buffers()):
            b_ema.copy_(b)
        if self.phema is not None:
            self.phema.update(self.net, self.step + 1)  # t = optimiser steps taken, including this one

    # ---------------------------------------------------------------------------------- the loop
    def save(self) -> Path:
        """Write the consolidated checkpoint (rank 0 only; collective under FSDP), then a barrier."""
        per_epoch = len(self.data) // self.config.train.batch_size
        state = {"step": self.step, "bad_steps": self.bad_steps, "scaler_skipped": self.scaler_skipped,
                 "data_position": {"epoch": self.step // per_epoch, "batch": self.step % per_epoch},
                 "data_hash": self.data_hash, "world_size": self.dist.world, "grad_accum": self.accum,
                 "rng": {"scheme": "per-step SeedSequence(seed, step)", "seed": self.config.train.seed}}
        if self.scaler.is_enabled():
            state["grad_scaler"] = self.scaler.state_dict()
        model, ema, optim, phema = self._full_state()
        try:
            if self.dist.is_main:
                save_checkpoint(self.out_dir, config=to_dict(self.config), state=state, model=model, ema=ema,
                                optimizer=optim, phema=phema)
                _write_log(self.out_dir, self.log)
        finally:
            self.dist.barrier()
        return self.out_dir / CHECKPOINT_FILE

    def _full_state(self):
        """(model, ema, optimizer, post-hoc EMA) state dicts, gathered to rank 0 when sharded."""
        phema = self.phema.models if self.phema is not None else []
        if self.config.train.fsdp:
            full = distributed.full_model_state
            return (full(self.net), full(self.ema), distributed.full_optimizer_state(self.net, self.optimizer),
                    [full(m) for m in phema] or None)
        return (self.net.state_dict(), self.ema.state_dict(), self.optimizer.state_dict(),
                [m.state_dict() for m in phema] or None)

    def snapshot_phema(self) -> None:
        """Write the post-hoc EMA profiles at this step to DIR/phema/ (rank 0; collective under FSDP)."""
        models = self.phema.models
        states = [distributed.full_model_state(m) for m in models] if self.config.train.fsdp else \
            [m.state_dict() for m in models]
        try:
            if self.dist.is_main:
                write_snapshot(self.out_dir, self.step, states, self.phema.meta())
        finally:
            self.dist.barrier()

    def _maybe_snapshot_phema(self, final: bool = False) -> None:
        t = self.config.train
        if self.phema is not None and self.step > 0 and (final or self.step % (t.phema_every or t.checkpoint_every)
                                                         == 0):
            self.snapshot_phema()

    def maybe_evaluate(self) -> dict | None:
        """Score the EMA model every eval.every steps; keep its checkpoint in best/ when it is the best."""
        every = self.config.eval.every
        if not every or self.step <= 0 or self.step % every:
            return None
        ema = self._plain_ema()
        result = None
        if self.dist.is_main:  # the other ranks wait for rank 0's verdict
            result = self.evaluator.maybe_evaluate(self.step, build_denoiser(self.config, ema).eval(),
                                                   self.data.data_shape)
        result = self.dist.broadcast(result)
        if result is not None and result["is_best"]:
            path = self.save()
            if self.dist.is_main:
                (self.out_dir / "best").mkdir(exist_ok=True)
                atomic_write_bytes(self.out_dir / "best" / CHECKPOINT_FILE, path.read_bytes())
        return result

    def _plain_ema(self):
        """The EMA network as an ordinary module on rank 0 (gathered from the shards under FSDP)."""
        if not self.config.train.fsdp:
            return self.ema
        state = distributed.full_model_state(self.ema)
        if not self.dist.is_main:
            return None
        net = build_denoiser(self.config).net
        net.load_state_dict(state)
        return net.to(self.device)

    def _log_record(self, loss: float, ema_loss: float | None, start: float) -> dict:
        record = {"step": self.step, "loss": loss, "loss_smooth": ema_loss, "lr": self.lr_at(self.step - 1),
                  "time": time.monotonic() - start, "bad_steps": self.bad_steps}
        if self.config.train.fp16:
            record["scaler_skipped"] = self.scaler_skipped
            record["grad_scale"] = float(self.scaler.get_scale())
        if self.accum != self.config.train.grad_accum:
            record["grad_accum"] = self.accum  # raised after an out-of-memory error
        return record

    def _finishing(self, start: float) -> bool:
        """True when the step just taken is the run's last (so it is always logged)."""
        t = self.config.train
        return self.step >= t.steps or _out_of_time(start, t.minutes)

    def run(self) -> dict:
        """Train until train.steps or train.minutes; checkpoint periodically and at the end."""
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.out_dir / "config.json", to_dict(self.config))
            self._fit_layout_planner()
        self.dist.barrier()
        t = self.config.train
        start, bar, ema_loss = time.monotonic(), _progress_bar(t, self.step, self.progress), None
        try:
            with _deferred_interrupt() as interrupt:
                while self.step < t.steps:
                    out_of_time, interrupted = self.dist.any([_out_of_time(start, t.minutes), interrupt["hit"]],
                                                             self.device)
                    if interrupted:  # Ctrl-C: the step in progress was finished; save and stop
                        self.save()
                        raise KeyboardInterrupt
                    if out_of_time:
                        break
                    loss = self.train_step()
                    if math.isfinite(loss):
                        ema_loss = loss if ema_loss is None else 0.98 * ema_loss + 0.02 * loss
                    if self.step % t.log_every == 0 or self._finishing(start):
                        self.log.append(self._log_record(loss, ema_loss, start))
                    self._maybe_snapshot_phema()
                    if self.step % t.checkpoint_every == 0:
                        self.save()
                    self.maybe_evaluate()
                    _advance(bar, self.step, start, t, ema_loss)
        finally:
            bar.close()
        if self.phema is not None and self.step % (t.phema_every or t.checkpoint_every):
            self._maybe_snapshot_phema(final=True)
        self.save()
        return {"step": self.step, "loss": ema_loss, "bad_steps": self.bad_steps,
                "scaler_skipped": self.scaler_skipped, "seconds": time.monotonic() - start}


def _rows(cond, rows: slice, batch: int):
    """The micro-batch `rows` of a conditioning dict (per-sample entries: tensors/lists of length batch)."""
    if cond is None:
        return None
    def per_sample(v) -> bool:
        if isinstance(v, torch.Tensor):
            return v.ndim > 0 and v.shape[0] == batch
        return isinstance(v, list | tuple) and len(v) == batch

    return {k: v[rows] if per_sample(v) else v for k, v in cond.items()}


@contextlib.contextmanager
def _deferred_interrupt():
    """Ctrl-C during a step lets the step finish, so the checkpoint written after it is consistent; a
    second Ctrl-C interrupts at once. (Only in the main thread, where Python delivers signals.)"""
    flag = {"hit": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag["hit"] = True
        signal.signal(signal.SIGINT, previous)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _out_of_time(start: float, minutes: float | None) -> bool:
    """True once `minutes` of wall time have passed since `start` (never when minutes is None)."""
    return minutes is not None and time.monotonic() - start >= minutes * 60


def _progress_bar(t, step: int, enabled: bool, desc: str = "training"):
    """A tqdm bar over seconds (when t.minutes is set) or steps; shared with the autoencoder trainer."""
    from tqdm.auto import tqdm

    if t.minutes is not None:
        return tqdm(total=round(t.minutes * 60), unit="s", desc=desc, disable=not enabled,
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f}s [{postfix}]")
    return tqdm(total=t.steps, initial=step, unit="step", desc=desc, disable=not enabled)


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
