"""Small organic molecules with 3-D conformers, as padded tensors the diffusion core trains on.

Data: the SMILES bundled in `smiles.txt` (a QM9-like set of up to 9 heavy atoms C, N, O, F, written by
scripts/make_molecule_smiles.py), explicit hydrogens, one conformer each from RDKit's ETKDG (Riniker & Landrum
2015, ETKDGv3 with a fixed random seed) refined with the MMFF94 force field (Halgren 1996). Computed once and cached
under the noisecraft cache directory (molecules/); deterministic.

One molecule of n atoms is a tensor (3 + K, N_max) (K = len(ELEMENTS)), following Hoogeboom et al. 2022 (EDM,
Sec. 3.1: positions x and one-hot features h diffused together):

    rows 0..2   the atom positions in angstrom times COORD_SCALE, centred on the molecule's mean atom position
                (the zero centre-of-mass subspace of EDM Sec. 3.2, mean over atoms, not mass-weighted)
    rows 3..    the one-hot atom type times TYPE_SCALE (EDM scales h by 1/4 against positions in angstrom)
    columns     atoms 0..n-1; columns n..N_max-1 are padding, all zero

so an atom is real exactly when its type rows are not all zero (`atom_mask`). Split: every 10th molecule in file
order is "test", the rest "train".
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

from noisecraft.conditions.atoms import atom_mask  # noqa: F401  (the layout's mask; re-exported here)
from noisecraft.data.base import SPLITS, ImageDataset
from noisecraft.errors import DataError
from noisecraft.files import atomic_write_bytes
from noisecraft.molecules.elements import ELEMENTS, MoleculeError, element_index
from noisecraft.paths import cache_dir

DATASET = "molecules"
COORD_SCALE = 0.5
TYPE_SCALE = 0.25
CONFORMER_SEED = 42
TEST_EVERY = 10


@dataclass(frozen=True)
class Molecule:
    """One molecule: element symbols (n,) and positions (n, 3) in angstrom."""

    symbols: tuple[str, ...]
    positions: np.ndarray

    def __post_init__(self):
        pos = np.asarray(self.positions)
        if pos.shape != (len(self.symbols), 3):
            raise MoleculeError(f"a molecule of {len(self.symbols)} atoms needs positions of shape "
                                f"({len(self.symbols)}, 3), got {pos.shape}")
        if not np.isfinite(pos).all():
            raise MoleculeError("molecule positions contain NaN or inf")
        for s in self.symbols:
            element_index(s)


def bundled_smiles() -> list[str]:
    """The bundled SMILES, in file order."""
    text = resources.files("noisecraft.molecules").joinpath("smiles.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def conformer(smiles: str, seed: int = CONFORMER_SEED) -> Molecule:
    """One ETKDGv3 conformer of a SMILES with explicit hydrogens, MMFF94-optimised (module docstring)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise DataError(f"RDKit cannot parse SMILES {smiles!r}")
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise DataError(f"ETKDG found no conformer for {smiles!r}")
    AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    symbols = tuple(a.GetSymbol() for a in mol.GetAtoms())
    return Molecule(symbols, mol.GetConformer().GetPositions())


def _cache_key(smiles: list[str]) -> str:
    from rdkit import __version__ as rdkit_version

    text = "\n".join([f"rdkit {rdkit_version} seed {CONFORMER_SEED}", *smiles])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_molecules() -> list[Molecule]:
    """The bundled molecules with their conformers (computed once, then read from the cache)."""
    smiles = bundled_smiles()
    path = cache_dir() / "molecules" / f"conformers-{_cache_key(smiles)}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as f:
            types, positions, counts = f["types"], f["positions"], f["counts"]
    else:
        mols = [conformer(s) for s in smiles]
        counts = np.array([len(m.symbols) for m in mols])
        types = np.concatenate([[element_index(s) for s in m.symbols] for m in mols]).astype(np.int64)
        positions = np.concatenate([m.positions for m in mols]).astype(np.float64)
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, types=types, positions=positions, counts=counts)
        atomic_write_bytes(path, buf.getvalue())
    out, start = [], 0
    for n in counts.tolist():
        out.append(Molecule(tuple(ELEMENTS[t] for t in types[start:start + n]), positions[start:start + n]))
        start += n
    return out


def encode(molecules: list[Molecule], n_max: int) -> torch.Tensor:
    """(B, 3 + K, n_max) float32 tensors of molecules (module docstring); positions centred on their mean."""
    out = torch.zeros(len(molecules), 3 + len(ELEMENTS), n_max)
    for b, m in enumerate(molecules):
        n = len(m.symbols)
        if n > n_max:
            raise MoleculeError(f"a molecule of {n} atoms does not fit the model's {n_max} atoms")
        pos = torch.as_tensor(np.asarray(m.positions), dtype=torch.float64)
        out[b, :3, :n] = ((pos - pos.mean(0)) * COORD_SCALE).T.float()
        out[b, 3 + torch.tensor([element_index(s) for s in m.symbols]), torch.arange(n)] = TYPE_SCALE
    return out


def decode(x: torch.Tensor, mask: torch.Tensor) -> list[Molecule]:
    """Molecules of sampled tensors x (B, 3 + K, N) with atom masks (B, N): each real atom's type is the argmax
    of its type rows, its position rows 0..2 over COORD_SCALE."""
    x, mask = x.detach().double().cpu(), mask.detach().cpu() > 0.5
    if not torch.isfinite(x).all():
        raise MoleculeError("the sampled molecules contain NaN or inf")
    out = []
    for b in range(x.shape[0]):
        cols = mask[b].nonzero().flatten()
        types = x[b, 3:, cols].argmax(0).tolist()
        out.append(Molecule(tuple(ELEMENTS[t] for t in types), (x[b, :3, cols].T / COORD_SCALE).numpy()))
    return out


def split_of(n: int, split: str) -> np.ndarray:
    """Positions of the items of `split`: every TEST_EVERY-th molecule (file order) is test."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    idx = np.arange(n)
    if split == "all":
        return idx
    test = idx % TEST_EVERY == TEST_EVERY - 1
    return idx[test] if split == "test" else idx[~test]


def load_molecule_dataset(*, root=None, resolution=None, channels=None, split="all", limit=None,
                          seed=0) -> ImageDataset:
    """The registered dataset "molecules": (N, 3 + K, N_max) tensors (module docstring), N_max the largest
    molecule of the whole set (so train and test share it); captions are the SMILES."""
    if root is not None or resolution is not None or channels is not None:
        raise DataError("dataset 'molecules' takes no root, resolution or channels")
    molecules, smiles = load_molecules(), bundled_smiles()
    n_max = max(len(m.symbols) for m in molecules)
    idx = split_of(len(molecules), split)[:limit]
    images = encode([molecules[i] for i in idx], n_max)
    return ImageDataset(DATASET, images, captions=tuple(smiles[i] for i in idx))
