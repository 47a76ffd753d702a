"""Latent datasets for latent diffusion (Rombach et al. 2022, section 3.2): the images of a dataset encoded once
with the autoencoder's posterior mean and scaled, z = (E(x) - shift_factor) * scaling_factor, cached on disk.

Cache: $NOISECRAFT_CACHE/latents (default ~/.cache/noisecraft/latents), one safetensors file per key

    latents-<dataset>-<key>.safetensors     tensor "latents" (N, c, H/f, W/f) float32; metadata "noisecraft" (JSON)

where key = sha256 of (the autoencoder's weights files, the pixel data bytes, the scaling, LATENT_CACHE_VERSION):
a retrained or replaced autoencoder, or changed images, give a new key, so a stale cache is never read.
Labels, class names, captions and attributes of the pixel dataset are kept, so conditioning works unchanged.

Sampling (`decode_latents`) inverts the scaling and decodes, tiled when the latent is larger than `TILE`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from noisecraft.errors import CheckpointError, DataError

LATENT_CACHE_VERSION = "1"
ENCODE_BATCH = 64
TILE, TILE_OVERLAP = 64, 16  # latent tile side / overlap for decoding large samples
HFLIP_KEY = "latents_hflip"  # attribute of a latent dataset: latents of the flipped images (data.hflip)


def latent_cache_dir() -> Path:
    from noisecraft.paths import cache_dir

    return cache_dir() / "latents"


def resolve_autoencoder_path(path, run_dir=None) -> Path:
    """`path` as given, else relative to the run directory `run_dir` (a moved run keeps working)."""
    p = Path(path)
    if p.exists() or p.is_absolute() or run_dir is None:
        if not p.exists():
            raise CheckpointError(f"data.autoencoder: {p} not found; train one with `noisecraft train-autoencoder "
                                  f"--preset ae-64 --out {p}` or point data.autoencoder at an autoencoder run "
                                  f"directory or a diffusers AutoencoderKL folder")
        return p
    run_dir = Path(run_dir)
    base = run_dir if run_dir.is_dir() else run_dir.parent
    return resolve_autoencoder_path(base / p)


def latent_cache_key(ae_path: Path, images: torch.Tensor, ae) -> str:
    from noisecraft.autoencoder.checkpoint import checkpoint_fingerprint

    h = hashlib.sha256()
    h.update(f"{LATENT_CACHE_VERSION}|{checkpoint_fingerprint(ae_path)}|{ae.scaling_factor!r}|"
             f"{ae.shift_factor!r}|{tuple(images.shape)}".encode())
    h.update(images.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


@torch.no_grad()
def encode_images(ae, images: torch.Tensor, *, progress: bool = True) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> scaled latents (N, c, H/f, W/f) float32: (mean - shift) * scale."""
    from tqdm.auto import tqdm

    dev = next(ae.parameters()).device
    out = []
    for s in tqdm(range(0, len(images), ENCODE_BATCH), desc="encoding latents", disable=not progress):
        out.append(ae.to_diffusion(ae.encode(images[s:s + ENCODE_BATCH].to(dev))).float().cpu())
    return torch.cat(out)


def encode_dataset(ds, ae_path, *, hflip: bool = False, progress: bool = True, keep_pixels: bool = False):
    """An ImageDataset of images -> the same dataset with `images` replaced by cached scaled latents.

    hflip=True (data.hflip of a latent run) also encodes the horizontally flipped images and keeps their latents
    as attributes[HFLIP_KEY]: flipping is an augmentation of the pixels, and the latent of a flipped image is not
    the flipped latent (the encoder is not equivariant to flips), so the trainer draws E(flip(x)) from there. The
    flipped latents are cached under their own key (the key hashes the image bytes). keep_pixels=True keeps the
    pixel images as attributes[PIXELS] (for conditions made in pixel space: a ControlNet's edge maps, a
    super-resolution model's low-resolution image)."""
    from noisecraft.autoencoder import load_autoencoder

    if ds.is_points or ds.images.ndim not in (4, 5):  # 5: video clips (N, C, T, H, W), a causal video autoencoder
        raise DataError(f"data.autoencoder needs 2-D images (N, C, H, W) or clips; dataset {ds.name!r} has shape "
                        f"{tuple(ds.images.shape)}")
    ae = load_autoencoder(ae_path)
    if (ds.images.ndim == 5) != hasattr(ae, "time_factor"):
        raise DataError(f"dataset {ds.name!r} has shape {tuple(ds.images.shape)}; the autoencoder {ae_path} codes "
                        f"{'clips (N, C, T, H, W)' if hasattr(ae, 'time_factor') else 'images (N, C, H, W)'}")
    if ds.images.shape[1] != ae.config.in_channels:
        raise DataError(f"dataset {ds.name!r} has {ds.images.shape[1]} channels, the autoencoder {ae_path} takes "
                        f"{ae.config.in_channels}; set data.channels={ae.config.in_channels}")
    f = ae.factor
    if ds.images.shape[-1] % f or ds.images.shape[-2] % f:
        raise DataError(f"image size {ds.images.shape[-2]}x{ds.images.shape[-1]} of {ds.name!r} is not divisible by "
                        f"the autoencoder's factor f={f}; set data.resolution to a multiple of {f}")
    latents = _cached_latents(ae, Path(ae_path), ds.images, ds.name, progress)
    attributes = ds.attributes
    if hflip:
        flipped = _cached_latents(ae, Path(ae_path), ds.images.flip(-1), f"{ds.name}-hflip", progress)
        attributes = {**(attributes or {}), HFLIP_KEY: flipped}
    if keep_pixels:
        from noisecraft.conditions.base import PIXELS

        attributes = {**(attributes or {}), PIXELS: ds.images}
    return dataclasses.replace(ds, name=f"{ds.name}-latents", images=latents, attributes=attributes)


def _cached_latents(ae, ae_path: Path, images: torch.Tensor, name: str, progress: bool) -> torch.Tensor:
    from safetensors.torch import load_file, save

    from noisecraft.files import atomic_write_bytes

    key = latent_cache_key(ae_path, images, ae)
    path = latent_cache_dir() / f"latents-{name}-{key}.safetensors"
    if path.is_file():
        try:
            return load_file(str(path))["latents"]
        except Exception:  # unreadable cache: recompute and replace
            pass
    latents = encode_images(ae, images, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"autoencoder": str(ae_path), "dataset": name, "num": len(latents), "key": key,
            "scaling_factor": ae.scaling_factor, "shift_factor": ae.shift_factor}
    atomic_write_bytes(path, save({"latents": latents}, metadata={"noisecraft": json.dumps(meta)}))
    return latents


@torch.no_grad()
def decode_latents(ae, z: torch.Tensor, *, batch_size: int = 64) -> torch.Tensor:
    """Scaled latents from the diffusion model -> images (float32, CPU): decode(z / scale + shift), in batches;
    latents larger than TILE are decoded tile by tile (`Autoencoder.tiled_decode`)."""
    dev = next(ae.parameters()).device
    out = []
    for s in range(0, len(z), batch_size):
        zb = ae.from_diffusion(z[s:s + batch_size].to(dev))
        big = max(zb.shape[-2:]) > TILE
        x = ae.tiled_decode(zb, tile=TILE, overlap=TILE_OVERLAP) if big else ae.decode(zb)
        out.append(x.float().cpu())
    return torch.cat(out)


def load_run_autoencoder(config, run_path, shape: tuple[int, ...]):
    """(autoencoder, latent sample shape) of a latent diffusion run. `shape` is the pipeline's sample shape: a
    U-Net's (c, side, side) holds the dataset's pixel side, which becomes side / f; other backbones (DiT) are
    configured at the latent size already."""
    from noisecraft.autoencoder import load_autoencoder
    from noisecraft.models.autoencoder import latent_shape

    ae = load_autoencoder(resolve_autoencoder_path(config.data.autoencoder, run_path))
    if config.model == "unet":
        return ae, latent_shape(ae.config, shape)
    return ae, tuple(shape)
