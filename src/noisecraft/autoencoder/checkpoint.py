"""Autoencoder checkpoints: one safetensors file with JSON metadata, written atomically, never unpickled.

Layout of an autoencoder run directory DIR:

    DIR/checkpoint.safetensors   tensors "model.*" (the autoencoder), "disc.*" (the patch discriminator, if any),
                                 "optim_ae.<i>.<key>", "optim_disc.<i>.<key>" (Adam states); metadata (JSON
                                 strings): format = "noisecraft.autoencoder", version, config (the AERunConfig),
                                 state (step, scaling_factor, shift_factor, last metrics), optim groups
    DIR/config.json              the same AERunConfig
    DIR/diffusers/               the weights as a diffusers AutoencoderKL folder (written at the end of training)

`load_autoencoder` (noisecraft.autoencoder) reads this or a diffusers folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from noisecraft.checkpoint import (
    CHECKPOINT_FILE,
    METADATA_KEYS,
    flatten_optimizer,
    resolve_checkpoint_path,
    unflatten_optimizer,
)
from noisecraft.errors import CheckpointError
from noisecraft.files import read_verified, write_verified

FORMAT = "noisecraft.autoencoder"
VERSION = "1"
DIFFUSION_FORMAT = "noisecraft.checkpoint"  # a diffusion run's checkpoint (checkpoint.py)
_PARTS = ("model", "disc", "optim_ae", "optim_disc")


@dataclass
class AECheckpoint:
    config: dict                      # the AERunConfig as a dict
    state: dict                       # step, scaling_factor, shift_factor, metrics
    tensors: dict[str, dict[str, torch.Tensor]]  # part -> {name: tensor}; parts as in _PARTS
    optim_groups: dict[str, list]     # "optim_ae" / "optim_disc" -> param_groups
    path: Path

    def optimizer_state(self, part: str) -> dict | None:
        if part not in self.optim_groups:
            return None
        flat = {f"optim.{k}": v for k, v in self.tensors[part].items()}
        return unflatten_optimizer(flat, self.optim_groups[part])


def save_ae_checkpoint(run_dir: Path, *, config: dict, state: dict, model: dict, disc: dict | None,
                       optimizers: dict[str, dict]) -> Path:
    """Write DIR/checkpoint.safetensors atomically; `optimizers` maps "optim_ae"/"optim_disc" to state_dicts."""

    tensors = {f"model.{k}": v for k, v in model.items()}
    tensors.update({f"disc.{k}": v for k, v in (disc or {}).items()})
    groups = {}
    for part, sd in optimizers.items():
        flat, groups[part] = flatten_optimizer(sd)
        tensors.update({f"{part}.{k.removeprefix('optim.')}": v for k, v in flat.items()})
    metadata = {"format": FORMAT, "version": VERSION, "config": json.dumps(config), "state": json.dumps(state),
                "optim_groups": json.dumps(groups)}
    return write_verified(Path(run_dir) / CHECKPOINT_FILE, tensors, metadata)


def load_ae_checkpoint(path) -> AECheckpoint:
    """Read an autoencoder checkpoint (run directory or file); CheckpointError for anything else, naming a
    diffusion run's checkpoint as such."""
    from safetensors import safe_open

    path = resolve_checkpoint_path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            fmt = (f.metadata() or {}).get("format")
    except Exception as e:  # SafetensorError, OSError: a corrupt file
        raise CheckpointError(f"{path} is corrupt or unreadable: {type(e).__name__}: {e}") from None
    if fmt == DIFFUSION_FORMAT:
        raise CheckpointError(f"{path} is a diffusion model checkpoint, not an autoencoder; pass the directory of "
                              f"`noisecraft train-autoencoder` or a diffusers AutoencoderKL folder")
    meta, raw = read_verified(path, FORMAT, VERSION, METADATA_KEYS, "noisecraft autoencoder checkpoint")
    try:
        config, state, groups = (json.loads(meta[k]) for k in ("config", "state", "optim_groups"))
    except Exception as e:  # JSON or key errors: a corrupt file
        raise CheckpointError(f"{path} is corrupt or unreadable: {type(e).__name__}: {e}") from None
    tensors: dict[str, dict] = {p: {} for p in _PARTS}
    for name, t in raw.items():
        part, _, rest = name.partition(".")
        if part not in tensors:
            raise CheckpointError(f"{path}: unexpected tensor {name!r}")
        tensors[part][rest] = t
    return AECheckpoint(config=config, state=state, tensors=tensors, optim_groups=groups, path=path)


def checkpoint_fingerprint(path) -> str:
    """sha256 (first 16 hex digits) of the autoencoder's weights file(s): the latent cache key."""
    import hashlib

    from noisecraft.autoencoder.interop import CONFIG_FILE, WEIGHTS_FILE, is_diffusers_folder

    path = Path(path)
    files = [path / CONFIG_FILE, path / WEIGHTS_FILE] if is_diffusers_folder(path) else [resolve_checkpoint_path(path)]
    h = hashlib.sha256()
    for file in files:
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


__all__ = ["AECheckpoint", "CHECKPOINT_FILE", "FORMAT", "checkpoint_fingerprint", "load_ae_checkpoint",
           "save_ae_checkpoint"]
