"""Molecule files: SDF (V2000 mol blocks with bonds) and XYZ, written whole or not at all; XYZ/SDF reading.

Bonds of generated molecules are inferred from distances with the bond-order lookup of Hoogeboom et al. 2022
(`noisecraft.molecules.elements.bond_orders`), the rule their stability metric uses, so a written SDF shows the
bonds the metrics count. Every file is formatted in memory first and written with one atomic rename: an unknown
element or a non-finite coordinate raises MoleculeError before anything is written.

The writers registered for the "molecules" modality (`noisecraft.pipelines.outputs`) take a `Generation` whose
images are molecule tensors (B, 3 + K, N): the real atoms are the columns whose type rows are not all zero (the
sampler's projection makes padding exactly zero, `noisecraft.conditions.atoms`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from noisecraft.files import atomic_write_bytes
from noisecraft.molecules.data import Molecule, atom_mask, decode
from noisecraft.molecules.elements import MoleculeError, bond_orders, element_index


def to_rdkit(molecule: Molecule, *, sanitize: bool = False):
    """An RDKit molecule with one conformer and the distance-inferred bonds; sanitize=True raises RDKit's
    sanitisation error for a molecule RDKit finds chemically invalid."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    bond_type = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
    mol = Chem.RWMol()
    for s in molecule.symbols:
        mol.AddAtom(Chem.Atom(s))
    orders = bond_orders(list(molecule.symbols), molecule.positions)
    for i, j in zip(*np.nonzero(np.triu(orders)), strict=True):
        mol.AddBond(int(i), int(j), bond_type[int(orders[i, j])])
    conf = Chem.Conformer(len(molecule.symbols))
    for i, p in enumerate(np.asarray(molecule.positions, dtype=np.float64)):
        conf.SetAtomPosition(i, Point3D(*map(float, p)))
    mol.AddConformer(conf, assignId=True)
    mol = mol.GetMol()
    if sanitize:
        Chem.SanitizeMol(mol)
    else:
        mol.UpdatePropertyCache(strict=False)
    return mol


def sdf_text(molecules: list[Molecule], names: list[str] | None = None) -> str:
    """The SDF of molecules (one V2000 mol block each, '$$$$' after each)."""
    from rdkit import Chem

    blocks = []
    for i, m in enumerate(molecules):
        mol = to_rdkit(m)
        mol.SetProp("_Name", names[i] if names else f"molecule {i}")
        blocks.append(Chem.MolToMolBlock(mol, kekulize=False) + "$$$$\n")
    return "".join(blocks)


def xyz_text(molecules: list[Molecule], names: list[str] | None = None) -> str:
    """The XYZ of molecules, concatenated (atom count, comment line, one 'symbol x y z' line per atom)."""
    lines = []
    for i, m in enumerate(molecules):
        lines += [str(len(m.symbols)), names[i] if names else f"molecule {i}"]
        lines += [f"{s} {x:.6f} {y:.6f} {z:.6f}" for s, (x, y, z) in zip(m.symbols, m.positions, strict=True)]
    return "\n".join(lines) + "\n"


def save_molecules(molecules: list[Molecule], out: str | Path, names: list[str] | None = None) -> Path:
    """Write molecules as SDF or XYZ by out's extension, atomically."""
    out = Path(out)
    formats = {".sdf": sdf_text, ".xyz": xyz_text}
    if out.suffix.lower() not in formats:
        raise MoleculeError(f"{str(out)!r}: molecules are written as {', '.join(formats)}; got "
                            f"{out.suffix or 'no extension'!r}")
    text = formats[out.suffix.lower()](molecules, names)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, text.encode())
    return out


def read_xyz(path: str | Path) -> list[Molecule]:
    """The molecules of an XYZ file (one or several concatenated); MoleculeError for a malformed file or an
    element outside ELEMENTS (naming the allowed ones)."""
    lines = Path(path).read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        try:
            n = int(lines[i])
            rows = [lines[i + 2 + k].split() for k in range(n)]
            symbols = tuple(r[0] for r in rows)
            positions = np.array([[float(v) for v in r[1:4]] for r in rows])
        except (ValueError, IndexError):
            raise MoleculeError(f"{path}: not an XYZ file (line {i + 1}: atom count, comment, then 'symbol x y z' "
                                f"lines)") from None
        for s in symbols:
            element_index(s)
        out.append(Molecule(symbols, positions))
        i += 2 + n
    return out


def read_sdf(path: str | Path) -> list[Molecule]:
    """The molecules (with their hydrogens as written) of an SDF file, read by RDKit without sanitising."""
    from rdkit import Chem

    out = []
    for k, mol in enumerate(Chem.SDMolSupplier(str(path), sanitize=False, removeHs=False)):
        if mol is None or mol.GetNumConformers() == 0:
            raise MoleculeError(f"{path}: record {k} is not a mol block with coordinates")
        symbols = tuple(a.GetSymbol() for a in mol.GetAtoms())
        for s in symbols:
            element_index(s)
        out.append(Molecule(symbols, mol.GetConformer().GetPositions()))
    return out


def generation_molecules(result) -> list[Molecule]:
    """The molecules of a `Generation` of a molecule run (module docstring)."""
    x = result.images
    return decode(x, atom_mask(x))


def _names(result) -> list[str]:
    return [f"{result.parameters['model']} seed {s}" for s in result.seeds]


def write_sdf(result, out: Path, run) -> Path:
    """The registered .sdf writer: every molecule of the generation in one SDF."""
    return save_molecules(generation_molecules(result), out, _names(result))


def write_xyz(result, out: Path, run) -> Path:
    """The registered .xyz writer: every molecule of the generation in one XYZ file."""
    return save_molecules(generation_molecules(result), out, _names(result))


def write_png(result, out: Path, run) -> Path:
    """The registered .png writer (the preview after training): up to 16 molecules drawn in 3-D, atoms coloured
    by element, the inferred bonds as lines."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"H": "#bbbbbb", "C": "#333333", "N": "#3050f8", "O": "#ff0d0d", "F": "#90e050"}
    molecules = generation_molecules(result)[:16]
    cols = min(4, len(molecules))
    rows = -(-len(molecules) // cols)
    fig = plt.figure(figsize=(3 * cols, 3 * rows))
    for k, m in enumerate(molecules):
        ax = fig.add_subplot(rows, cols, k + 1, projection="3d")
        p = np.asarray(m.positions)
        orders = bond_orders(list(m.symbols), p)
        for i, j in zip(*np.nonzero(np.triu(orders)), strict=True):
            ax.plot(*p[[i, j]].T, color="#777777", linewidth=1.0 + orders[i, j])
        ax.scatter(*p.T, c=[colours[s] for s in m.symbols], s=[30 if s == "H" else 80 for s in m.symbols],
                   depthshade=False, edgecolors="black", linewidths=0.3)
        ax.set_axis_off()
        ax.set_title(f"seed {result.seeds[k]}", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buf.getvalue())
    return out
