"""Training data and its order: loading, the items of each step's batch, the per-step random seeds.

Determinism: the batch order of epoch e comes from a permutation seeded by (seed, e), and every random
draw of step s from generators seeded by (seed, s, stream). Both are pure functions of (seed, step), so a
run resumed at step s draws exactly what an uninterrupted run would.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from noisecraft.errors import DataError


def load_data(config):
    """The dataset of a RunConfig: `config.data` loaded (latent runs: the cached scaled latents of its images,
    plus those of the flipped images when data.hflip is set, and the pixel images when a condition is made from
    them)."""
    from noisecraft.data import load_dataset

    c = config.data
    ds = load_dataset(c.dataset, root=c.root, resolution=c.resolution, channels=c.channels, split=c.split,
                      limit=c.limit, seed=config.train.seed, count=c.count,
                      frames=getattr(c, "frames", None))
    if c.autoencoder:  # latent diffusion (noisecraft.autoencoder.latents)
        from noisecraft.autoencoder.latents import encode_dataset, resolve_autoencoder_path
        from noisecraft.conditions import conditions_for

        ds = encode_dataset(ds, resolve_autoencoder_path(c.autoencoder), hflip=c.hflip,  # + flipped images' latents
                            keep_pixels=conditions_for(config).pixel_space)
    if len(ds) < config.train.batch_size:
        raise DataError(f"dataset {c.dataset!r} has {len(ds)} items, fewer than train.batch_size="
                        f"{config.train.batch_size}; lower the batch size")
    return ds


def step_seed(seed: int, step: int, *streams: int) -> int:
    """A 63-bit seed for the generator of `step` (and sub-stream `streams`) of a run seeded `seed`."""
    return int(np.random.SeedSequence([seed, step, *streams]).generate_state(1, dtype=np.uint64)[0] >> 1)


class BatchOrder:
    """The items of each step's batch.

    n:           number of items in the dataset
    batch_size:  items per step; an epoch is n // batch_size steps (the last n % batch_size items of each
                 epoch's permutation are left out)
    seed:        epoch e uses the permutation of range(n) drawn by numpy's default_rng([seed, e])
    """

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_epoch = n // batch_size
        self._epoch, self._perm = None, None  # the permutation of the last epoch asked for

    def __call__(self, step: int) -> torch.Tensor:
        """The (batch_size,) int64 indices of step's batch."""
        epoch, j = divmod(step, self.per_epoch)
        if self._epoch != epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n)
        b = self.batch_size
        return torch.from_numpy(self._perm[j * b:(j + 1) * b].copy())

    def position(self, step: int) -> dict:
        """{"epoch", "batch"} of the step about to be taken (as written into checkpoints)."""
        return {"epoch": step // self.per_epoch, "batch": step % self.per_epoch}


def chain_hash(previous: str, indices: torch.Tensor) -> str:
    """SHA-256 of `previous` (hex) followed by the int64 bytes of a batch's indices: a hash chain over the
    batches taken so far, which two runs share exactly when they saw the same data in the same order."""
    idx = indices.numpy().astype(np.int64)
    return hashlib.sha256(previous.encode() + idx.tobytes()).hexdigest()
