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

from noisecraft.errors import CheckpointError
from noisecraft.training.checkpoint import (
    CHECKPOINT_FILE,
    atomic_write_bytes,
    flatten_optimizer,
    resolve_checkpoint_path,
    unflatten_optimizer,
)

FORMAT = "noisecraft.autoencoder"
VERSION = "1"
DIFFUSION_FORMAT = "noisecraft.checkpoint"  # a diffusion run's checkpoint (training/checkpoint.py)
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
    from safetensors.torch import save

    tensors = {f"model.{k}": v for k, v in model.items()}
    tensors.update({f"disc.{k}": v for k, v in (disc or {}).items()})
    groups = {}
    for part, sd in optimizers.items():
        flat, groups[part] = flatten_optimizer(sd)
        tensors.update({f"{part}.{k.removeprefix('optim.')}": v for k, v in flat.items()})
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"refusing to save a checkpoint with non-finite values in {name}")
    metadata = {"format": FORMAT, "version": VERSION, "config": json.dumps(config), "state": json.dumps(state),
                "optim_groups": json.dumps(groups)}
    path = Path(run_dir) / CHECKPOINT_FILE
    atomic_write_bytes(path, save(tensors, metadata=metadata))
    return path


def load_ae_checkpoint(path) -> AECheckpoint:
    """Read an autoencoder checkpoint (run directory or file); CheckpointError for anything else, naming a
    diffusion run's checkpoint as such."""
    from safetensors import safe_open

    path = resolve_checkpoint_path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            fmt = meta.get("format")
            if fmt == DIFFUSION_FORMAT:
                raise CheckpointError(f"{path} is a diffusion model checkpoint, not an autoencoder; pass the "
                                      f"directory of `noisecraft train-autoencoder` or a diffusers AutoencoderKL "
                                      f"folder")
            if fmt != FORMAT:
                raise CheckpointError(f"{path} is not a noisecraft autoencoder checkpoint (format {fmt!r})")
            if meta.get("version") != VERSION:
                raise CheckpointError(f"{path}: autoencoder checkpoint version {meta.get('version')!r} "
                                      f"unsupported; this noisecraft reads version {VERSION}")
            raw = {k: f.get_tensor(k) for k in f.keys()}
        config, state, groups = (json.loads(meta[k]) for k in ("config", "state", "optim_groups"))
    except CheckpointError:
        raise
    except Exception as e:  # SafetensorError, OSError, JSON/Key errors: a corrupt file
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
