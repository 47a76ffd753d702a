"""Files written atomically and safetensors files verified by a digest: what checkpoints, caches and planner
files share. A write goes to a temporary file in the same directory, is flushed and fsync'ed, then moved over
the old file with os.replace (atomic on POSIX and Windows), and the directory is fsync'ed; a reader sees the old
file or the new one, never a partial one. A verified file carries a SHA-256 digest of its tensors and metadata,
so bit flips that still parse are caught; nothing is ever unpickled."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from noisecraft.errors import CheckpointError


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


def read_verified(path: Path, fmt: str, version: str, keys,
                  what: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
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
