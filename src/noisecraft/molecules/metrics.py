"""Molecule metrics in the field's own terms (Hoogeboom et al. 2022, EDM, Sec. 5.1 and App. "Molecule stability").

- Atom stability: the fraction of atoms whose bond orders sum to their element's valence, bonds inferred from
  interatomic distances with EDM's bond-length tables and margins (`noisecraft.molecules.elements.bond_orders`;
  EDM's `check_stability`).
- Molecule stability: the fraction of molecules all of whose atoms are stable.
- Validity: the fraction of molecules whose RDKit molecule, built from the same inferred bonds
  (`noisecraft.molecules.io.to_rdkit`), passes RDKit's sanitisation; as EDM's `BasicMolecularMetrics`, the
  SMILES of a valid molecule is that of its largest fragment (a molecule falling apart into pieces still counts
  as valid, with its largest piece).
- Connected: the fraction of molecules that are valid and of one piece (not in EDM's table; its validity's
  largest-fragment rule counts a cloud of unbonded atoms as valid, which this figure does not).
- Uniqueness: distinct canonical SMILES among the valid molecules, over the number of valid molecules.
- Novelty: the fraction of the distinct valid SMILES that are not training SMILES. The training reference is the
  training molecules' bundled SMILES together with the SMILES the same bond inference reads from their conformers
  (EDM computes its reference through its own pipeline), all canonical RDKit SMILES without hydrogens.

EDM reports 98.7 / 82.0 / 91.9 / 90.7% (atom stability, molecule stability, validity, validity x uniqueness) on
QM9; `dataset_metrics` gives the same figures for the conformers of the bundled data themselves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from noisecraft.molecules.data import Molecule
from noisecraft.molecules.elements import VALENCE, bond_orders


@dataclass(frozen=True)
class MoleculeMetrics:
    """The metrics of a set of molecules (module docstring); fractions in [0, 1]."""

    n: int                      # molecules
    atom_stability: float
    molecule_stability: float
    validity: float
    uniqueness: float           # distinct valid SMILES / valid molecules
    novelty: float | None       # distinct valid SMILES not in the training set / distinct valid SMILES
    valid_unique: float         # validity x uniqueness (EDM's "V x U" column)
    connected: float            # valid and one fragment

    def as_dict(self) -> dict:
        return asdict(self)


def stable_atoms(molecule: Molecule) -> np.ndarray:
    """(n,) bool: atom i's bond orders (inferred from distances) sum to its element's valence (EDM)."""
    valence = bond_orders(list(molecule.symbols), molecule.positions).sum(1)
    return valence == np.array([VALENCE[s] for s in molecule.symbols])


def canonical_smiles(mol) -> str:
    """The canonical SMILES of an RDKit molecule without its hydrogens."""
    from rdkit import Chem

    return Chem.MolToSmiles(Chem.RemoveHs(mol, sanitize=False))


def valid_smiles(molecule: Molecule) -> str | None:
    """The canonical SMILES (hydrogens removed) of the largest fragment of the molecule built from the inferred
    bonds, or None when RDKit's sanitisation rejects it (EDM's validity; module docstring)."""
    return _validity(molecule)[0]


def _validity(molecule: Molecule) -> tuple[str | None, int]:
    """(valid_smiles, number of fragments; 0 when invalid)."""
    from rdkit import Chem, RDLogger

    from noisecraft.molecules.io import to_rdkit

    RDLogger.DisableLog("rdApp.*")
    try:
        mol = to_rdkit(molecule, sanitize=True)
    except (ValueError, RuntimeError):  # RDKit's sanitisation errors derive from ValueError
        return None, 0
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    return canonical_smiles(max(frags, key=lambda m: m.GetNumAtoms())), len(frags)


def canonical(smiles: str) -> str | None:
    """A SMILES string in RDKit's canonical form without hydrogens (None if RDKit cannot parse it)."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles)
    return None if mol is None else canonical_smiles(mol)


def molecule_metrics(molecules: list[Molecule], training_smiles=None) -> MoleculeMetrics:
    """Atom and molecule stability, validity, uniqueness and novelty of molecules (module docstring).
    training_smiles: the reference for novelty (any SMILES; canonicalised here), None: no novelty."""
    stable = [stable_atoms(m) for m in molecules]
    atoms = sum(len(s) for s in stable)
    checked = [_validity(m) for m in molecules]
    valid = [s for s, _ in checked if s is not None]
    unique = set(valid)
    n = len(molecules)
    novelty = None
    if training_smiles is not None and unique:
        reference = {c for c in (canonical(s) for s in training_smiles) if c is not None}
        novelty = len(unique - reference) / len(unique)
    return MoleculeMetrics(
        n=n,
        atom_stability=sum(int(s.sum()) for s in stable) / max(atoms, 1),
        molecule_stability=sum(bool(s.all()) for s in stable) / max(n, 1),
        validity=len(valid) / max(n, 1),
        uniqueness=len(unique) / max(len(valid), 1),
        novelty=novelty,
        valid_unique=len(unique) / max(n, 1),
        connected=sum(k == 1 for _, k in checked) / max(n, 1),
    )


def training_reference(split: str = "train") -> list[str]:
    """The novelty reference of the bundled data's `split`: its SMILES as bundled and as the bond inference reads
    its conformers (module docstring)."""
    from noisecraft.molecules.data import bundled_smiles, load_molecules, split_of

    molecules, smiles = load_molecules(), bundled_smiles()
    idx = split_of(len(molecules), split)
    inferred = [valid_smiles(molecules[i]) for i in idx]
    return [smiles[i] for i in idx] + [s for s in inferred if s is not None]


def dataset_metrics(split: str = "train") -> MoleculeMetrics:
    """The metrics of the bundled conformers of `split` themselves; novelty against the training split (0 for the
    training split by construction; the test split's share of molecules absent from training)."""
    from noisecraft.molecules.data import load_molecules, split_of

    molecules = load_molecules()
    picked = [molecules[i] for i in split_of(len(molecules), split)]
    return molecule_metrics(picked, training_reference("train"))


__all__ = ["MoleculeMetrics", "canonical", "canonical_smiles", "dataset_metrics", "molecule_metrics",
           "stable_atoms", "training_reference", "valid_smiles"]
