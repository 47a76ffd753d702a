"""Molecule files (SDF / XYZ, atomic, read back by RDKit), bad input, and the EDM metrics on hand-made molecules
whose answers are known (Hoogeboom et al. 2022, bond orders from distances)."""

import math

import numpy as np
import pytest
import torch

from noisecraft.molecules.data import Molecule, decode, encode
from noisecraft.molecules.elements import MoleculeError, bond_order, element_index
from noisecraft.molecules.io import read_sdf, read_xyz, save_molecules, to_rdkit
from noisecraft.molecules.metrics import canonical, molecule_metrics, stable_atoms, valid_smiles


def water() -> Molecule:
    a = math.radians(104.5) / 2
    return Molecule(("O", "H", "H"), np.array([[0, 0, 0], [0.96 * math.sin(a), 0.96 * math.cos(a), 0],
                                               [-0.96 * math.sin(a), 0.96 * math.cos(a), 0]]))


def methane(stretch: float = 1.09) -> Molecule:
    d = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / math.sqrt(3)
    pos = np.concatenate([[[0, 0, 0]], 1.09 * d])
    pos[1] = stretch * d[0]
    return Molecule(("C", "H", "H", "H", "H"), pos)


def ethylene() -> Molecule:
    c, h = 0.665, 1.087  # C=C 1.33 angstrom, C-H 1.087
    pos = [[c, 0, 0], [-c, 0, 0]]
    for sx in (1, -1):
        for sy in (1, -1):
            pos.append([sx * (c + h * math.cos(math.radians(58.5))), sy * h * math.sin(math.radians(58.5)), 0])
    return Molecule(("C", "C", "H", "H", "H", "H"), np.array(pos))


def pentavalent_carbon() -> Molecule:
    pos = [[0, 0, 0], [0, 0, 1.09], [0, 0, -1.09]]
    for k in range(3):
        t = 2 * math.pi * k / 3
        pos.append([1.09 * math.cos(t), 1.09 * math.sin(t), 0])
    return Molecule(("C", "H", "H", "H", "H", "H"), np.array(pos))


def test_bond_orders_follow_the_edm_tables():
    assert bond_order("C", "C", 1.54) == 1 and bond_order("C", "C", 1.63) == 1 and bond_order("C", "C", 1.65) == 0
    assert bond_order("C", "C", 1.38) == 2 and bond_order("C", "C", 1.20) == 3
    assert bond_order("C", "O", 1.21) == 2 and bond_order("O", "H", 0.96) == 1 and bond_order("H", "H", 1.5) == 0
    assert bond_order("C", "F", 1.20) == 1  # no double C-F bond in the tables


def test_metrics_of_hand_made_molecules():
    assert stable_atoms(water()).all() and stable_atoms(methane()).all() and stable_atoms(ethylene()).all()
    stretched = stable_atoms(methane(1.25))  # 1.25 angstrom > 1.09 + 0.10: that C-H bond is gone
    assert stretched.tolist() == [False, False, True, True, True]
    assert valid_smiles(water()) == "O" and valid_smiles(methane()) == "C" and valid_smiles(ethylene()) == "C=C"
    assert valid_smiles(methane(1.25)) == "C"  # RDKit fills the carbon with an implicit H (EDM's lenient validity)
    assert valid_smiles(pentavalent_carbon()) is None
    m = molecule_metrics([water(), water(), methane(), methane(1.25), pentavalent_carbon()], ["O", "CCO"])
    atoms = 3 + 3 + 5 + 5 + 6
    assert m.atom_stability == pytest.approx((atoms - 2 - 1) / atoms)  # the C of CH5 is unstable (valence 5)
    assert m.molecule_stability == pytest.approx(3 / 5) and m.validity == pytest.approx(4 / 5)
    assert m.uniqueness == pytest.approx(2 / 4) and m.novelty == pytest.approx(1 / 2)
    assert m.valid_unique == pytest.approx(2 / 5) and m.connected == pytest.approx(3 / 5)  # CH3 + H: two pieces
    assert canonical("OCC") == "CCO" and canonical("not a smiles") is None


def test_sdf_and_xyz_round_trip_through_rdkit(tmp_path):
    from rdkit import Chem

    mols = [water(), ethylene()]
    save_molecules(mols, tmp_path / "m.sdf", ["water", "ethylene"])
    supplier = list(Chem.SDMolSupplier(str(tmp_path / "m.sdf"), removeHs=False))
    assert [m.GetProp("_Name") for m in supplier] == ["water", "ethylene"]
    assert Chem.MolToSmiles(Chem.RemoveHs(supplier[1])) == "C=C"  # RDKit sanitises the file's bonds
    for got, want in zip(read_sdf(tmp_path / "m.sdf"), mols, strict=True):
        assert got.symbols == want.symbols
        np.testing.assert_allclose(got.positions, want.positions, atol=1e-4)  # V2000: 4 decimals
    save_molecules(mols, tmp_path / "m.xyz")
    for got, want in zip(read_xyz(tmp_path / "m.xyz"), mols, strict=True):
        assert got.symbols == want.symbols
        np.testing.assert_allclose(got.positions, want.positions, atol=1e-6)
    assert to_rdkit(ethylene(), sanitize=True).GetBondBetweenAtoms(0, 1).GetBondTypeAsDouble() == 2.0


def test_encode_decode_round_trip_and_too_many_atoms():
    x = encode([water(), ethylene()], 8)
    assert x.shape == (2, 8, 8)
    back = decode(x, (x[:, 3:].abs().sum(1) > 0).float())
    assert back[0].symbols == ("O", "H", "H")
    np.testing.assert_allclose(back[1].positions, ethylene().positions - ethylene().positions.mean(0), atol=1e-6)
    with pytest.raises(MoleculeError, match="6 atoms does not fit the model's 5 atoms"):
        encode([ethylene()], 5)


def test_bad_input_is_a_clear_error_and_nothing_is_written(tmp_path):
    with pytest.raises(MoleculeError, match="unknown element 'Cl'; allowed elements: H, C, N, O, F"):
        Molecule(("C", "Cl"), np.zeros((2, 3)))
    with pytest.raises(MoleculeError, match="NaN"):
        Molecule(("C", "H"), np.array([[0, 0, 0], [np.nan, 0, 0]]))
    with pytest.raises(MoleculeError, match=r"positions of shape \(2, 3\)"):
        Molecule(("C", "H"), np.zeros((3, 3)))
    with pytest.raises(MoleculeError, match="unknown element"):
        element_index("Xx")
    bad = tmp_path / "bad.xyz"
    bad.write_text("2\ncomment\nC 0 0 0\nCl 1.7 0 0\n")
    with pytest.raises(MoleculeError, match="unknown element 'Cl'"):
        read_xyz(bad)
    bad.write_text("2\ncomment\nC 0 0 0\n")
    with pytest.raises(MoleculeError, match="not an XYZ file"):
        read_xyz(bad)
    with pytest.raises(MoleculeError, match="written as .sdf, .xyz"):
        save_molecules([water()], tmp_path / "w.pdb")
    nan = torch.zeros(1, 8, 4)
    nan[0, 3, :2], nan[0, 0, 0] = 0.25, float("nan")
    with pytest.raises(MoleculeError, match="NaN or inf"):
        decode(nan, torch.tensor([[1.0, 1, 0, 0]]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.xyz"]  # nothing written, no temp files left


def test_an_existing_file_is_kept_whole_when_a_write_fails(tmp_path, monkeypatch):
    out = tmp_path / "m.sdf"
    save_molecules([water()], out)
    before = out.read_bytes()
    import noisecraft.molecules.io as io

    def broken(*a, **k):
        raise MoleculeError("boom")

    monkeypatch.setattr(io, "bond_orders", broken)
    with pytest.raises(MoleculeError, match="boom"):
        save_molecules([water(), methane()], out)
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.sdf"]
