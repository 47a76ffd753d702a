"""Checkpoints: one safetensors file plus JSON, written atomically, never unpickled.

Layout of a run directory DIR (itself a valid `--checkpoint`):

    DIR/checkpoint.safetensors   tensors "model.*", "ema.*", "optim.<i>.<key>"; metadata (all JSON strings):
                                 format, version, config (the RunConfig), state (step, counters, data
                                 position, RNG scheme), optim_groups (AdamW hyper-parameters)
    DIR/config.json              the same RunConfig, for people and tools

A checkpoint is written to a temporary file in DIR, flushed and fsync'ed, then moved over the old one
with os.replace (atomic on POSIX and Windows): a crash at any point leaves either the previous or the
new checkpoint, never a partial one. Loading accepts only this format: a pickle file is refused without
being opened by pickle, and any safetensors error becomes a CheckpointError.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from noisecraft.errors import CheckpointError

FORMAT = "noisecraft.checkpoint"
VERSION = "1"
CHECKPOINT_FILE = "checkpoint.safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")


@dataclass
class Checkpoint:
    config: dict                      # the RunConfig as a dict
    state: dict                       # step, counters, data position, ...
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optim: dict[str, torch.Tensor]    # flattened AdamW state (see `flatten_optimizer`)
    optim_groups: list[dict]
    path: Path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file in the same directory + fsync + os.replace)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """torch optimizer state_dict -> ({"optim.<param index>.<key>": tensor}, param_groups)."""
    tensors = {}
    for idx, per_param in state_dict["state"].items():
        for key, value in per_param.items():
            tensors[f"optim.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return tensors, state_dict["param_groups"]


def unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": groups}


def save_checkpoint(run_dir: Path, *, config: dict, state: dict, model: dict, ema: dict, optimizer: dict) -> Path:
    """Write DIR/checkpoint.safetensors atomically. `optimizer` is a torch optimizer state_dict."""
    from safetensors.torch import save

    optim_tensors, groups = flatten_optimizer(optimizer)
    tensors = {f"model.{k}": v for k, v in model.items()}
    tensors.update({f"ema.{k}": v for k, v in ema.items()})
    tensors.update(optim_tensors)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"refusing to save a checkpoint with non-finite values in {name}")
    metadata = {"format": FORMAT, "version": VERSION, "config": json.dumps(config), "state": json.dumps(state),
                "optim_groups": json.dumps(groups)}
    path = Path(run_dir) / CHECKPOINT_FILE
    atomic_write_bytes(path, save(tensors, metadata=metadata))
    return path


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A run directory or a .safetensors file -> the checkpoint file; clear errors otherwise."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
        if not path.is_file():
            raise CheckpointError(f"no checkpoint in {path.parent}: expected {CHECKPOINT_FILE} there")
        return path
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(f"{path}: pickle checkpoints are not loaded (unsafe); noisecraft reads .safetensors only")
    if path.suffix.lower() != ".safetensors":
        raise CheckpointError(f"{path}: not a checkpoint; expected a run directory or a .safetensors file")
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a noisecraft checkpoint (run directory or file). Raises CheckpointError on anything else."""
    from safetensors import safe_open

    path = resolve_checkpoint_path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise CheckpointError(f"{path} is not a noisecraft checkpoint (format metadata missing or foreign)")
            if meta.get("version") != VERSION:
                raise CheckpointError(f"{path}: checkpoint version {meta.get('version')!r} unsupported; "
                                      f"this noisecraft reads version {VERSION}")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        config, state, groups = (json.loads(meta[k]) for k in ("config", "state", "optim_groups"))
    except CheckpointError:
        raise
    except Exception as e:  # SafetensorError, OSError, JSON/Key errors: a corrupt file
        raise CheckpointError(f"{path} is corrupt or unreadable: {type(e).__name__}: {e}") from None
    parts: dict[str, dict] = {"model": {}, "ema": {}, "optim": {}}
    for name, t in tensors.items():
        prefix, _, rest = name.partition(".")
        if prefix not in parts:
            raise CheckpointError(f"{path}: unexpected tensor {name!r}")
        parts[prefix][rest if prefix != "optim" else name] = t
    return Checkpoint(config=config, state=state, model=parts["model"], ema=parts["ema"], optim=parts["optim"],
                      optim_groups=groups, path=path)
