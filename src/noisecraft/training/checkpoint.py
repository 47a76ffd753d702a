"""Checkpoints: one safetensors file plus JSON, written atomically, never unpickled.

Layout of a run directory DIR (itself a valid `--checkpoint`):

    DIR/checkpoint.safetensors   tensors "model.*", "ema.*", "optim.<i>.<key>", "phema.<k>.*" (post-hoc EMA
                                 profiles); metadata (all JSON strings): format, version, config (the
                                 RunConfig), state (step, counters, data position, RNG scheme),
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

import hashlib
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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file in the same directory + fsync + os.replace + fsync of
    the directory). Temp files of `path` left by an earlier killed write are removed afterwards."""
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
    _fsync_dir(path.parent)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # from a save killed before its rename
        stale.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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


def save_checkpoint(run_dir: Path, *, config: dict, state: dict, model: dict, ema: dict, optimizer: dict,
                    phema: list[dict] | None = None) -> Path:
    """Write DIR/checkpoint.safetensors atomically. `optimizer` is a torch optimizer state_dict; `phema`
    the state dicts of the post-hoc EMA profiles. Non-finite weights are refused (CheckpointError)."""

    optim_tensors, groups = flatten_optimizer(optimizer)
    tensors = {f"model.{k}": v for k, v in model.items()}
    tensors.update({f"ema.{k}": v for k, v in ema.items()})
    tensors.update(optim_tensors)
    for k, sd in enumerate(phema or []):
        tensors.update({f"phema.{k}.{name}": v for name, v in sd.items()})
    metadata = {"format": FORMAT, "version": VERSION, "config": json.dumps(config), "state": json.dumps(state),
                "optim_groups": json.dumps(groups)}
    return write_verified(Path(run_dir) / CHECKPOINT_FILE, tensors, metadata)


def write_verified(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write tensors + string metadata as safetensors, atomically, with a SHA-256 digest of both under
    metadata["sha256"]. Non-finite floating-point values are refused (CheckpointError)."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"refusing to save a checkpoint with non-finite values in {name}")
    metadata = dict(metadata, sha256=content_digest(tensors, metadata))
    atomic_write_bytes(Path(path), save(tensors, metadata=metadata))
    return Path(path)


def content_digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 over the metadata (except the digest) and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for key in sorted(k for k in metadata if k != "sha256"):
        h.update(json.dumps([key, metadata[key]]).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


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
    meta, tensors = read_verified(path)
    try:
        config, state, groups = (json.loads(meta[k]) for k in ("config", "state", "optim_groups"))
    except Exception as e:  # JSON or key errors: a corrupt file
        raise CheckpointError(f"{path} is corrupt or unreadable: {type(e).__name__}: {e}") from None
    if not (isinstance(config, dict) and isinstance(state, dict) and isinstance(groups, list)
            and all(isinstance(g, dict) for g in groups)):
        raise CheckpointError(f"{path} is corrupt: config/state/optim_groups metadata of the wrong type")
    parts: dict[str, dict] = {"model": {}, "ema": {}, "optim": {}, "phema": {}}
    for name, t in tensors.items():
        prefix, _, rest = name.partition(".")
        if prefix not in parts:
            raise CheckpointError(f"{path}: unexpected tensor {name!r}")
        if prefix == "phema":
            k, _, rest = rest.partition(".")
            parts["phema"].setdefault(k, {})[rest] = t
        else:
            parts[prefix][rest if prefix != "optim" else name] = t
    return Checkpoint(config=config, state=state, model=parts["model"], ema=parts["ema"], optim=parts["optim"],
                      optim_groups=groups, path=path, phema=parts["phema"] or None)


def _header_metadata(data: bytes) -> dict[str, str]:
    """The "__metadata__" of a safetensors file's JSON header (8-byte little-endian length, then the JSON)."""
    if len(data) < 8:
        raise ValueError("the file is shorter than a safetensors header")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise ValueError(f"the safetensors header claims {size} bytes but the file has {len(data) - 8}")
    meta = json.loads(data[8:8 + size]).get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError("the safetensors metadata is not a string-to-string map")
    return meta


def read_verified(path: Path, fmt: str = FORMAT, version: str = VERSION, keys=METADATA_KEYS,
                   what: str = "noisecraft checkpoint") -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Metadata and tensors of a safetensors file of format `fmt` whose digest matches; else CheckpointError."""
    from safetensors.torch import load

    try:
        # One read of the whole file, then metadata and tensors parsed from that buffer: they come from one
        # version of the file even when a live run replaces it (os.replace) while we read. (A reader polling a
        # training run once saw a digest mismatch with per-tensor reads from the path; not reproduced on demand.)
        data = Path(path).read_bytes()
        meta = _header_metadata(data)
        if meta.get("format") != fmt:
            raise CheckpointError(f"{path} is not a {what} (format metadata missing or foreign)")
        if meta.get("version") != version:
            raise CheckpointError(f"{path}: {what} version {meta.get('version')!r} unsupported; "
                                  f"this noisecraft reads version {version}")
        tensors = load(data)
        unknown = sorted(set(meta) - set(keys))
        if unknown:  # (also catches a damaged key name, e.g. of the digest)
            raise CheckpointError(f"{path} is corrupt: unexpected metadata {unknown}")
        digest = meta.get("sha256")
        if digest is not None and digest != content_digest(tensors, meta):
            raise CheckpointError(f"{path} is corrupt: its content does not match the SHA-256 digest stored in it")
    except CheckpointError:
        raise
    except Exception as e:  # SafetensorError, OSError, ...: a corrupt file
        raise CheckpointError(f"{path} is corrupt or unreadable: {type(e).__name__}: {e}") from None
    return meta, tensors
