"""Saving and restoring a training run, beside the checkpoint file format of checkpoint.py.

- Resuming: the checkpoint's config, with the stopping criteria and the execution options taken from the
  request (`resumed_config`), and the weights loaded into the live modules (`restore_weights`).
- Gathering: the full state dicts of the network, EMA, optimiser and post-hoc EMA profiles, consolidated on
  rank 0 when FSDP shards them (`full_state`).
- The best model: a copy of the checkpoint in DIR/best/ (`keep_best`).
- The training log: DIR/log.jsonl, one JSON record per line (`read_log`, `write_log`).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from noisecraft.checkpoint import CHECKPOINT_FILE, load_checkpoint, unflatten_optimizer
from noisecraft.config import from_dict
from noisecraft.errors import CheckpointError
from noisecraft.files import atomic_write_bytes
from noisecraft.runconfig import RunConfig
from noisecraft.training import distributed

LOG_FILE = "log.jsonl"
BEST_DIR = "best"

# TrainConfig fields a resumed run takes from the request: they change how, not what, is computed.
EXECUTION = ("threads", "grad_accum", "compile", "grad_checkpointing", "fused_adam", "fsdp", "oom_retry")


def open_resume(out_dir: Path):
    """The checkpoint of out_dir to resume from; CheckpointError("cannot resume: ...") when it is unusable."""
    try:
        return load_checkpoint(out_dir)
    except CheckpointError as e:
        raise CheckpointError(f"cannot resume: {e}") from None


def resumed_config(ckpt, requested: RunConfig) -> RunConfig:
    """The checkpoint's config, with the stopping criteria (steps, minutes) and the execution options (which
    leave the mathematics alone: process layout, accumulation, compile, checkpointing, threads) requested."""
    saved = from_dict(RunConfig, ckpt.config)
    r = requested.train
    train = replace(saved.train, steps=r.steps, minutes=r.minutes, **{k: getattr(r, k) for k in EXECUTION})
    return replace(saved, train=train)


def restore_weights(ckpt, net, ema, phema, optimizer, *, fsdp: bool) -> None:
    """Load the network with its optimiser state, the EMA and the post-hoc EMA profiles from `ckpt`
    (strictly: a missing or extra tensor raises)."""
    load_module(net, ckpt.model, fsdp=fsdp, optimizer=optimizer,
                optim=unflatten_optimizer(ckpt.optim, ckpt.optim_groups))
    load_module(ema, ckpt.ema, fsdp=fsdp)
    if phema is None:
        return
    if ckpt.phema is None or len(ckpt.phema) != len(phema.models):
        raise KeyError("the post-hoc EMA profiles of the config are missing from the checkpoint")
    for k, model in enumerate(phema.models):
        load_module(model, ckpt.phema[str(k)], fsdp=fsdp)


def load_module(module, state: dict, *, fsdp: bool, optimizer=None, optim: dict | None = None) -> None:
    """Load a full state dict (and the optimizer's, if given) into `module`, sharded under FSDP."""
    if fsdp:
        distributed.load_full_state(module, state, optimizer if optim else None, optim)
        return
    module.load_state_dict(state, strict=True)
    if optim is not None:
        optimizer.load_state_dict(optim)


def full_state(net, ema, optimizer, phema, *, fsdp: bool):
    """(model, ema, optimizer, post-hoc EMA list or None) state dicts, gathered to rank 0 under FSDP."""
    models = phema.models if phema is not None else []
    if fsdp:
        full = distributed.full_model_state
        return (full(net), full(ema), distributed.full_optimizer_state(net, optimizer),
                [full(m) for m in models] or None)
    return net.state_dict(), ema.state_dict(), optimizer.state_dict(), [m.state_dict() for m in models] or None


def keep_best(out_dir: Path, checkpoint: Path) -> Path:
    """Copy `checkpoint` to out_dir/best/ (atomically); its path there."""
    path = Path(out_dir) / BEST_DIR / CHECKPOINT_FILE
    path.parent.mkdir(exist_ok=True)
    atomic_write_bytes(path, Path(checkpoint).read_bytes())
    return path


def read_log(out_dir: Path) -> list[dict]:
    """The records of out_dir/log.jsonl, oldest first (empty when there is none)."""
    path = Path(out_dir) / LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_log(out_dir: Path, log: list[dict]) -> None:
    """Replace out_dir/log.jsonl by `log`, one JSON record per line (atomically)."""
    atomic_write_bytes(Path(out_dir) / LOG_FILE, "".join(json.dumps(r) + "\n" for r in log).encode())
