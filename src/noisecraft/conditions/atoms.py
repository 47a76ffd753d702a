"""The condition "atoms": which columns of a molecule tensor are real atoms, and the zero-CoM projection.

A molecule run (preset `molecules`) samples tensors (3 + K, N_max) (`noisecraft.molecules.data`). This condition
gives the network and the loss the atom mask (cond["atom_mask"] (B, N), cond["loss_mask"] (B, 1, N), so the
denoising loss is a mean over real atoms only) and confines noise and samples to the subspace of Hoogeboom et al.
2022 (EDM, Sec. 3.2): positions with zero mean over the real atoms, padding exactly zero (`project`). The
training noise is projected (the zero-CoM Gaussian of EDM eq. 4 is the standard Gaussian projected, x - mean x),
and generation projects the initial draw, every x the denoiser sees and every estimate it returns.

At sampling, molecule i's atom count is drawn from the training set's histogram of atom counts (EDM Sec. 3.4,
p(M)) with numpy's default_rng(seed + i), or given: request.conditions["atoms"] = an int or one int per molecule.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import Tensor

from noisecraft.conditions.base import Condition, register
from noisecraft.errors import NoisecraftError
from noisecraft.files import atomic_write_json

COUNTS_FILE = "atom_counts.json"


def atom_mask(x: Tensor) -> Tensor:
    """(B, N) float mask of the real atoms of clean tensors x (B, 3 + K, N): type rows not all zero."""
    return (x[:, 3:].abs().sum(1) > 0).to(x.dtype)


def zero_com(x: Tensor, mask: Tensor) -> Tensor:
    """x (B, 3 + K, N) with its position rows 0..2 minus their mean over the real atoms (mask (B, N)), and every
    padding column zero: the orthogonal projection onto EDM's zero centre-of-mass subspace (Sec. 3.2)."""
    m = mask.to(x.dtype).unsqueeze(1)  # (B, 1, N)
    pos = x[:, :3] * m
    mean = pos.sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1)
    return torch.cat([(pos - mean) * m, x[:, 3:] * m], dim=1)


def mask_of_counts(counts, n_max: int, device=None) -> Tensor:
    """(B, n_max) float mask with the first counts[b] atoms real."""
    counts = torch.as_tensor(counts, device=device).reshape(-1, 1)
    return (torch.arange(n_max, device=device).unsqueeze(0) < counts).float()


@register("atoms")
class AtomCondition(Condition):
    """The atom mask of molecule tensors (module docstring). Not guidable: it is in both branches of guidance."""

    guidable = False

    def __init__(self, config) -> None:
        super().__init__(config)
        self.histogram: dict[int, int] = {}

    @property
    def n_max(self) -> int:
        return int(self.image_shape[-1])

    def setup(self, dataset, net, device, progress: bool = False) -> None:
        super().setup(dataset, net, device, progress)
        counts = atom_mask(dataset.images).sum(1).long().tolist()
        self.histogram = {int(n): counts.count(n) for n in sorted(set(counts))}

    def prepare(self, run_dir, progress: bool = False) -> None:
        atomic_write_json(run_dir / COUNTS_FILE, {str(k): v for k, v in self.histogram.items()})

    def load(self, run_dir, net, device, data_shape: tuple) -> None:
        super().load(run_dir, net, device, data_shape)
        path = run_dir / COUNTS_FILE
        if not path.exists():
            raise NoisecraftError(f"{path} is missing: a molecule run keeps its training atom counts there")
        self.histogram = {int(k): int(v) for k, v in json.loads(path.read_text()).items()}

    def _masks(self, mask: Tensor) -> dict:
        mask = mask.to(self.device)
        return {"atom_mask": mask, "loss_mask": mask.unsqueeze(1)}

    def from_images(self, idx: Tensor, x0: Tensor, generator: torch.Generator) -> dict:
        return self._masks(atom_mask(x0))

    def from_batch(self, idx: Tensor) -> dict:
        raise NoisecraftError("the atoms condition is read from the molecule tensors (from_images)")

    def modal_count(self) -> int:
        return max(self.histogram, key=lambda n: (self.histogram[n], -n))

    def null(self, n: int) -> dict:
        """The most frequent training atom count (the condition is never dropped; this is guidance's side)."""
        return self._masks(mask_of_counts([self.modal_count()] * n, self.n_max))

    def given(self, request) -> bool:
        return True  # drawn from the histogram when the request names no count

    def check_request(self, request) -> None:
        value = (request.conditions or {}).get(self.name)
        if value is None:
            return
        values = [value] if isinstance(value, int) else list(value)
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= self.n_max
                                 for v in values):
            raise NoisecraftError(f"condition 'atoms' takes atom counts in 1..{self.n_max} (an int or one per "
                                  f"molecule), got {value!r}")
        if len(values) not in (1, request.num):
            raise NoisecraftError(f"condition 'atoms': give 1 atom count or {request.num}, got {len(values)}")

    def draw_counts(self, num: int, seed: int | None) -> list[int]:
        """Atom counts of num molecules from the training histogram: molecule i from default_rng(seed + i)."""
        if seed is None:
            return [self.modal_count()] * num
        sizes = np.array(list(self.histogram))
        p = np.array(list(self.histogram.values()), dtype=np.float64)
        p /= p.sum()
        return [int(np.random.default_rng(seed + i).choice(sizes, p=p)) for i in range(num)]

    def from_request(self, request, num: int, seed: int | None) -> dict:
        value = (request.conditions or {}).get(self.name)
        if value is None:
            counts = self.draw_counts(num, seed)
        else:
            counts = [value] * num if isinstance(value, int) else list(value) * (num if len(value) == 1 else 1)
        return self._masks(mask_of_counts(counts, self.n_max))

    def project(self, x: Tensor, cond: dict) -> Tensor:
        return zero_com(x, cond["atom_mask"].to(x.device))

    def describe(self) -> str:
        return "a molecule model (atom counts: request.conditions['atoms'], drawn from the data by default)"
