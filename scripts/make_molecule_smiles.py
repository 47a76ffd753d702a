"""Write src/noisecraft/molecules/smiles.txt: the project's bundled set of small organic molecules.

A QM9-like set (Ramakrishnan et al. 2014 enumerate molecules of up to 9 heavy atoms C, N, O, F): here a
deterministic combinatorial enumeration, scaffold x substituent x substituent, kept when RDKit parses it,
it has 2..9 heavy atoms of C, N, O, F only and no formal charge; canonical SMILES, deduplicated, sorted,
then every k-th kept so that the file holds about TARGET molecules.

    python scripts/make_molecule_smiles.py
"""

from __future__ import annotations

from pathlib import Path

from rdkit import Chem, RDLogger

TARGET = 400
SCAFFOLDS = ("C{}{}", "CC{}{}", "CCC{}{}", "C(C{}){}", "CC(C{}){}", "C=C{}{}", "C#C{}{}", "C1CC1{}{}", "C1CCC1{}{}",
             "C1CCCC1{}{}", "C1CCOC1{}{}", "C1CCNC1{}{}", "C1CO1{}{}", "c1ccccc1{}{}", "c1ccncc1{}{}", "c1ccoc1{}{}",
             "c1cc[nH]c1{}{}", "c1cncnc1{}{}", "O=C{}{}", "OC{}{}", "NC{}{}", "N#CC{}{}", "CC(=O){}{}", "CN(C){}{}",
             "COC{}{}", "C1=CCCC1{}{}", "c1cnoc1{}{}", "c1cn[nH]c1{}{}")
SUBSTITUENTS = ("", "C", "O", "N", "F", "CC", "OC", "CO", "C=O", "C#N", "C(=O)O", "C(=O)N", "NC", "C(F)(F)F", "CF",
                "C#C", "C=C", "OCC", "CN", "N=O")


def enumerate_smiles() -> list[str]:
    RDLogger.DisableLog("rdApp.*")
    out = set()
    for scaffold in SCAFFOLDS:
        for a in SUBSTITUENTS:
            for b in SUBSTITUENTS:
                s = scaffold.format(f"({a})" if a else "", b)
                mol = Chem.MolFromSmiles(s)
                if mol is None or any(atom.GetFormalCharge() for atom in mol.GetAtoms()):
                    continue
                if not 2 <= mol.GetNumHeavyAtoms() <= 9 or {x.GetSymbol() for x in mol.GetAtoms()} - set("CNOF"):
                    continue
                out.add(Chem.MolToSmiles(mol))
    return sorted(out)


if __name__ == "__main__":
    smiles = enumerate_smiles()
    step = max(1, len(smiles) // TARGET)
    kept = smiles[::step]
    path = Path(__file__).resolve().parents[1] / "src/noisecraft/molecules/smiles.txt"
    path.write_text("".join(f"{s}\n" for s in kept))
    print(f"{len(smiles)} enumerated, {len(kept)} written to {path}")
