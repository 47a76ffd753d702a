"""On-disk cache of a training set's caption embeddings, so CPU training never re-encodes a caption.

A dataset's distinct captions (plus the empty prompt, the null condition) are encoded once by a frozen
encoder and stored in one safetensors file keyed by (encoder identity, SHA-256 of the sorted distinct
captions): `text-<encoder>-<captions hash>.safetensors` in the cache directory ($NOISECRAFT_CACHE/text,
else ~/.cache/noisecraft/text). The file holds tokens (U, T, D), mask (U, T), pooled (U, P) for the U
distinct captions padded to one T, and its metadata repeats the key and the captions, which are checked
on reading; a file that does not match, or cannot be read, is recomputed. Writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from noisecraft.errors import NoisecraftError
from noisecraft.paths import cache_dir
from noisecraft.text.encoders import TextEncoder

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    return cache_dir() / "text"


def captions_hash(captions) -> str:
    return hashlib.sha256("\n".join(captions).encode()).hexdigest()


@dataclass
class CaptionTable:
    """The encodings of distinct captions; row 0 is the empty prompt (the null text condition)."""

    captions: tuple[str, ...]   # ("", then the distinct captions sorted)
    tokens: torch.Tensor        # (U, T, D) float32, exactly 0 at padding
    mask: torch.Tensor          # (U, T) bool
    pooled: torch.Tensor        # (U, P) float32
    path: Path | None = None    # the cache file, if cached

    def rows(self, captions) -> torch.Tensor:
        """(N,) int64: the table row of each caption."""
        where = {c: i for i, c in enumerate(self.captions)}
        try:
            return torch.tensor([where[c] for c in captions], dtype=torch.long)
        except KeyError as e:
            raise NoisecraftError(f"caption {e.args[0]!r} is not in the embedding table") from None

    def to(self, device) -> CaptionTable:
        return CaptionTable(self.captions, self.tokens.to(device), self.mask.to(device), self.pooled.to(device),
                            self.path)


def pad_to(tokens: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, D) tokens and (B, T) mask zero-padded at the end to `length` (mask False there)."""
    extra = length - tokens.shape[1]
    return (torch.nn.functional.pad(tokens, (0, 0, 0, extra)),
            torch.nn.functional.pad(mask, (0, extra), value=False))


def encode_all(encoder: TextEncoder, captions, batch_size: int = 256, progress: bool = False) -> CaptionTable:
    """Encode ("", *sorted distinct captions) in batches and pad them to one length T."""
    from tqdm.auto import tqdm

    unique = ("", *sorted(set(captions) - {""}))
    parts = []
    for start in tqdm(range(0, len(unique), batch_size), desc="encoding captions", unit="batch",
                      disable=not progress or len(unique) <= batch_size):
        chunk = list(unique[start:start + batch_size])
        parts.append(encoder.encode(chunk, allow_empty=True))
    T = max(p[0].shape[1] for p in parts)
    padded = [pad_to(tok.detach().float().cpu(), mask.cpu(), T) for tok, mask, _ in parts]
    return CaptionTable(unique, torch.cat([p[0] for p in padded]).contiguous(),
                        torch.cat([p[1] for p in padded]).contiguous(),
                        torch.cat([p[2].detach().float().cpu() for p in parts]).contiguous())


def cache_path(encoder: TextEncoder, captions, cache_dir: str | Path | None = None) -> Path:
    unique = sorted(set(captions) - {""})
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", encoder.identity)
    return Path(cache_dir or default_cache_dir()) / f"text-{slug}-{captions_hash(unique)[:16]}.safetensors"


def _read(path: Path, identity: str, unique: tuple[str, ...]) -> CaptionTable | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            ok = (meta.get("identity") == identity and meta.get("version") == str(CACHE_VERSION)
                  and tuple(json.loads(meta.get("captions", "[]"))) == unique)
            if not ok:
                return None
            return CaptionTable(unique, f.get_tensor("tokens"), f.get_tensor("mask").bool(), f.get_tensor("pooled"),
                                path)
    except Exception as e:  # noqa: BLE001 - any unreadable file is recomputed
        warnings.warn(f"text embedding cache {path} is unreadable ({type(e).__name__}: {e}); recomputing", stacklevel=3)
        return None


def cached_caption_table(encoder: TextEncoder, captions, cache_dir: str | Path | None = None, *,
                         use_cache: bool = True, progress: bool = True) -> CaptionTable:
    """The CaptionTable of `captions`, read from the cache when present and valid, else encoded and cached."""
    if encoder.identity is None:
        raise NoisecraftError("this text encoder trains with the network; its embeddings cannot be cached")
    unique = ("", *sorted(set(captions) - {""}))
    path = cache_path(encoder, captions, cache_dir)
    if use_cache and path.is_file():
        table = _read(path, encoder.identity, unique)
        if table is not None:
            return table
    table = encode_all(encoder, unique, progress=progress)
    if use_cache:
        from safetensors.torch import save

        from noisecraft.files import atomic_write_bytes

        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"identity": encoder.identity, "version": str(CACHE_VERSION), "captions": json.dumps(list(unique)),
                "captions_sha256": captions_hash(unique[1:])}
        blob = save({"tokens": table.tokens, "mask": table.mask.to(torch.uint8), "pooled": table.pooled}, metadata=meta)
        atomic_write_bytes(path, blob)
        table.path = path
    return table
