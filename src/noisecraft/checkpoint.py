"""Checkpoints: one safetensors file plus JSON, written atomically, never unpickled.

Layout of a run directory DIR (itself a valid `--checkpoint`):

    DIR/checkpoint.safetensors   tensors "model.*", "ema.*", "optim.<i>.<key>", "phema.<k>.*" (post-hoc EMA
                                 profiles), "repa.*" (a REPA projector); metadata (all JSON strings): format,
                                 version, config (the RunConfig), state (step, counters, data position, RNG scheme),
                                 optim_groups (AdamW hyper-parameters), sha256 (digest of all the rest)
    DIR/config.json              the same RunConfig, for people and tools

A checkpoint is written to a temporary file in DIR, flushed and fsync'ed, then moved over the old one
with os.replace (atomic on POSIX and Windows): a crash at any point leaves either the previous or the
new checkpoint, never a partial one; the directory is fsync'ed after the rename, and temp files left by
an earlier killed save are removed after a successful one. Loading accepts only this format: a pickle
file is refused without being opened by pickle, any safetensors error becomes a CheckpointError, and a
SHA-256 digest over the tensors (name, dtype, shape, bytes) and metadata catches bit flips that still
parse.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from noisecraft.compat import migrate_checkpoint
from noisecraft.errors import CheckpointError
from noisecraft.files import read_verified, write_verified

FORMAT = "noisecraft.checkpoint"
VERSION = "1"
CHECKPOINT_FILE = "checkpoint.safetensors"
METADATA_KEYS = {"format", "version", "config", "state", "optim_groups", "sha256"}
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
    phema: dict[str, dict[str, torch.Tensor]] | None = None  # profile index -> state dict (post-hoc EMA)
    repa: dict[str, torch.Tensor] | None = None  # the REPA projector of a run with train.repa (training/repa.py)


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


def save_checkpoint(run_dir: Path, *, config: dict, state: dict, model: dict, ema: dict, optimizer: dict,
                    phema: list[dict] | None = None, repa: dict | None = None) -> Path:
    """Write DIR/checkpoint.safetensors atomically. `optimizer` is a torch optimizer state_dict; `phema`
    the state dicts of the post-hoc EMA profiles; `repa` the REPA projector's (tensors "repa.*"). Non-finite
    weights are refused (CheckpointError)."""

    optim_tensors, groups = flatten_optimizer(optimizer)
    tensors = {f"model.{k}": v for k, v in model.items()}
    tensors.update({f"ema.{k}": v for k, v in ema.items()})
    tensors.update(optim_tensors)
    for k, sd in enumerate(phema or []):
        tensors.update({f"phema.{k}.{name}": v for name, v in sd.items()})
    tensors.update({f"repa.{k}": v for k, v in (repa or {}).items()})
    metadata = {"format": FORMAT, "version": VERSION, "config": json.dumps(config), "state": json.dumps(state),
                "optim_groups": json.dumps(groups)}
    return write_verified(Path(run_dir) / CHECKPOINT_FILE, tensors, metadata)


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
    path = resolve_checkpoint_path(path)
    meta, tensors = read_checkpoint_file(path)
    try:
        config, state, groups = (json.loads(meta[k]) for k in ("config", "state", "optim_groups"))
    except Exception as e:  # JSON or key errors: a corrupt file
        raise CheckpointError(f"{path} is corrupt or unreadable: {type(e).__name__}: {e}") from None
    if not (isinstance(config, dict) and isinstance(state, dict) and isinstance(groups, list)
            and all(isinstance(g, dict) for g in groups)):
        raise CheckpointError(f"{path} is corrupt: config/state/optim_groups metadata of the wrong type")
    parts: dict[str, dict] = {"model": {}, "ema": {}, "optim": {}, "phema": {}, "repa": {}}
    for name, t in tensors.items():
        prefix, _, rest = name.partition(".")
        if prefix not in parts:
            raise CheckpointError(f"{path}: unexpected tensor {name!r}")
        if prefix == "phema":
            k, _, rest = rest.partition(".")
            parts["phema"].setdefault(k, {})[rest] = t
        else:
            parts[prefix][rest if prefix != "optim" else name] = t
    return migrate_checkpoint(Checkpoint(config=config, state=state, model=parts["model"], ema=parts["ema"],
                                         optim=parts["optim"], optim_groups=groups, path=path,
                                         phema=parts["phema"] or None, repa=parts["repa"] or None))


def read_checkpoint_file(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Metadata and tensors of a noisecraft checkpoint file whose digest matches; else CheckpointError."""
    return read_verified(path, FORMAT, VERSION, METADATA_KEYS, "noisecraft checkpoint")
