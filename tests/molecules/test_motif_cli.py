"""Motif scaffolding (noisecraft.molecules.motif) and the molecule preset end to end through the CLI: train two
steps of a tiny EGNN, sample SDF / XYZ / PNG, scaffold a motif whose atoms must stay exactly where given."""

import numpy as np
import pytest
import torch

from noisecraft.cli.main import main
from noisecraft.conditions.atoms import mask_of_counts, zero_com
from noisecraft.molecules.data import Molecule
from noisecraft.molecules.elements import MoleculeError
from noisecraft.molecules.io import read_sdf, read_xyz, save_molecules
from noisecraft.molecules.motif import known_part, motif_tensor

TINY = ["network.hidden=8", "network.layers=1", "train.batch_size=8", "data.limit=16", "sample.steps=3",
        "sample.num=2"]
# float32-representable coordinates, far from the origin: the motif must come back bit for bit
MOTIF = Molecule(("C", "O", "H"), np.array([[5.0, -3.0, 2.0], [6.25, -3.0, 2.0], [6.5, -2.125, 2.0]]))


def test_known_part_is_an_orthogonal_projection_inside_the_zero_com_subspace():
    g = torch.Generator().manual_seed(0)
    mask = mask_of_counts([7, 5], 9)
    x = torch.randn(2, 8, 9, generator=g, dtype=torch.float64)
    y = torch.randn(2, 8, 9, generator=g, dtype=torch.float64)
    pk, p = known_part(x, 3), zero_com(x, mask)
    torch.testing.assert_close(known_part(pk, 3), pk, atol=1e-15, rtol=0)  # idempotent
    torch.testing.assert_close((pk * y).sum(), (x * known_part(y, 3)).sum(), atol=1e-12, rtol=0)  # self-adjoint
    torch.testing.assert_close(known_part(p, 3), pk, atol=1e-14, rtol=0)  # P_K P = P_K
    torch.testing.assert_close(zero_com(pk, mask), pk, atol=1e-14, rtol=0)  # P P_K = P_K
    with pytest.raises(MoleculeError, match="the motif has 3 atoms; the model makes molecules of at most 2"):
        motif_tensor(MOTIF, 2)


@pytest.fixture(scope="module")
def mol_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mol")
    assert main(["train", "--preset", "molecules", "--steps", "2", "--out", str(out), "--device", "cpu",
                 *TINY]) == 0
    return out


def test_train_then_sample_sdf_xyz_png(mol_run, tmp_path):
    from rdkit import Chem

    assert (mol_run / "samples.png").is_file() and (mol_run / "atom_counts.json").is_file()
    assert main(["sample", "--checkpoint", str(mol_run), "--num", "3", "--steps", "2", "--atoms", "5", "6", "7",
                 "--out", str(tmp_path / "m.sdf")]) == 0
    mols = read_sdf(tmp_path / "m.sdf")
    assert [len(m.symbols) for m in mols] == [5, 6, 7]
    assert len([m for m in Chem.SDMolSupplier(str(tmp_path / "m.sdf"), sanitize=False)]) == 3
    assert main(["sample", "--checkpoint", str(mol_run), "--num", "2", "--steps", "2",
                 "--out", str(tmp_path / "m.xyz")]) == 0
    assert len(read_xyz(tmp_path / "m.xyz")) == 2


def test_motif_atoms_stay_exactly_where_fixed_and_states_stay_in_the_subspace(mol_run):
    from noisecraft.molecules.data import COORD_SCALE, decode
    from noisecraft.molecules.motif import scaffold
    from noisecraft.pipelines import Request, load

    run = load(mol_run)
    seen = []
    out = scaffold(run, MOTIF, Request(num=3, steps=4, seed=5, batch_size=2, conditions={"atoms": [6, 9, 12]}),
                   callback=lambda info: seen.append((info["x"].clone(), info["denoised"].clone())))
    mask = mask_of_counts([6, 9, 12], run.data_shape[-1])
    mols = decode(out.images, mask)
    for m, n in zip(mols, [6, 9, 12], strict=True):
        assert len(m.symbols) == n and m.symbols[:3] == MOTIF.symbols
        assert np.array_equal(m.positions[:3], MOTIF.positions)  # exactly, to the bit
        assert np.isfinite(m.positions).all() and not np.allclose(m.positions[3:], 0)
    want = known_part(motif_tensor(MOTIF, run.data_shape[-1]), 3)
    for x, d in seen:  # every estimate's known part is the motif; states and estimates are zero-CoM
        b = x.shape[0]
        mk = mask[:2] if b == 2 else mask[2:]
        torch.testing.assert_close(known_part(d, 3), want.expand_as(d).to(d), atol=1e-6, rtol=0)
        for t in (x, d):
            mean = (t[:, :3] * mk[:, None]).sum(-1) / mk.sum(-1)[:, None]
            assert mean.abs().max() < 1e-3 and torch.all(t[(mk == 0)[:, None].expand_as(t)] == 0)
    again = scaffold(run, MOTIF, Request(num=1, steps=4, seed=6, conditions={"atoms": 9}))
    torch.testing.assert_close(again.images[0], out.images[1])  # molecule i from seed + i, any batch size
    assert COORD_SCALE > 0


def test_motif_from_the_cli_and_its_errors(mol_run, tmp_path, capsys):
    motif = tmp_path / "motif.xyz"
    save_molecules([MOTIF], motif)
    assert main(["sample", "--checkpoint", str(mol_run), "--motif", str(motif), "--num", "2", "--steps", "3",
                 "--out", str(tmp_path / "s.sdf")]) == 0
    for m in read_sdf(tmp_path / "s.sdf"):
        assert m.symbols[:3] == MOTIF.symbols and len(m.symbols) >= 3
        np.testing.assert_allclose(m.positions[:3], MOTIF.positions, atol=1e-4)  # V2000 keeps 4 decimals
    capsys.readouterr()
    bad = tmp_path / "bad.xyz"
    cases = [("2\nx\nC 0 0 0\nCl 1.7 0 0\n", "unknown element 'Cl'; allowed elements: H, C, N, O, F"),
             ("1\nx\nC nan 0 0\n", "NaN or inf"),
             ("".join(["30\nbig\n"] + [f"C {1.5 * k} 0 0\n" for k in range(30)]), "at most 26 atoms")]
    for text, message in cases:
        bad.write_text(text)
        assert main(["sample", "--checkpoint", str(mol_run), "--motif", str(bad), "--steps", "2",
                     "--out", str(tmp_path / "no.sdf")]) != 0
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert main(["sample", "--checkpoint", str(mol_run), "--motif", str(motif), "--atoms", "2", "--steps", "2",
                 "--out", str(tmp_path / "no.sdf")]) != 0
    assert "smaller than the motif's 3 atoms" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", str(mol_run), "--motif", str(motif), "--out", str(tmp_path / "no.ply")]) \
        != 0
    assert "writes .png, .sdf, .xyz" in capsys.readouterr().err
    assert not (tmp_path / "no.sdf").exists() and not (tmp_path / "no.ply").exists()
