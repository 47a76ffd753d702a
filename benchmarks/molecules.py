"""Molecules: a trained `molecules` run (EGNN, EDM preconditioning, zero-CoM noise) in the EDM paper's terms, beside
the same figures for the bundled conformers themselves (results: benchmarks/modalities.md, "Molecules").

    /tmp/ncslot noisecraft train --preset molecules --out runs/molecules-bench train.threads=1
    /tmp/ncslot python benchmarks/molecules.py --run runs/molecules-bench --num 500 \
        --sdf benchmarks/molecules_samples.sdf --png benchmarks/molecules.png --json benchmarks/results/molecules.json

1. Generated: `--num` molecules from the run (its default sampler and steps, seeds 1000..; atom counts drawn from
   the training histogram, EDM Sec. 3.4).
2. Data: the bundled conformers of the train split and of the test split (the figures the data itself reaches with
   the same bond inference; novelty of the test split = its molecules absent from training).
3. Metrics (`noisecraft.molecules.metrics`): atom stability, molecule stability, RDKit validity (largest fragment),
   uniqueness among valid, novelty against the training SMILES; EDM's QM9 figures beside them.
4. Motif scaffolding (`noisecraft.molecules.motif`): `--motif-num` molecules around the heavy-atom skeleton of the
   first test molecule with at least 4 heavy atoms (its heavy atoms fixed; counts from the histogram), with the
   same metrics and the largest deviation of a motif atom from where it was fixed.
Prints one JSON object (CPU seconds by time.process_time, one torch thread).

    python benchmarks/molecules.py --data-only                              # 2. alone (no run needed)
    python benchmarks/molecules.py --table benchmarks/results/molecules.json  # the markdown table of a report
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch


def machine() -> str:
    """The CPU's model name (Linux), else platform's description."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.platform()


EDM_QM9 = {"atom_stability": 0.987, "molecule_stability": 0.820, "validity": 0.919, "valid_unique": 0.907}


def motif_of_test_molecule():
    """The heavy atoms of the first test molecule with >= 4 heavy atoms, as a motif Molecule, and its SMILES."""
    from noisecraft.molecules.data import Molecule, bundled_smiles, load_molecules, split_of

    molecules, smiles = load_molecules(), bundled_smiles()
    for i in split_of(len(molecules), "test"):
        m = molecules[i]
        heavy = [k for k, s in enumerate(m.symbols) if s != "H"]
        if len(heavy) >= 4:
            return Molecule(tuple(m.symbols[k] for k in heavy), m.positions[heavy]), smiles[i]
    raise SystemExit("no test molecule with 4 heavy atoms")


ROWS = (("atom_stability", "atom stability"), ("molecule_stability", "molecule stability"),
        ("validity", "validity (RDKit, largest fragment)"), ("uniqueness", "uniqueness (of valid)"),
        ("valid_unique", "valid and unique"), ("novelty", "novelty (of unique valid)"),
        ("connected", "valid and connected"))


def table(report: dict) -> str:
    """The markdown table of a report: one row per metric, a column per set of molecules present."""
    columns = [(k, t) for k, t in (("model", "generated"), ("motif", "motif scaffolds"), ("data-train", "data: train"),
                                   ("data-test", "data: test"), ("edm-qm9", "EDM on QM9")) if k in report]
    lines = ["| metric | " + " | ".join(t for _, t in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for key, title in ROWS:
        cells = [report[k].get(key) for k, _ in columns]
        lines.append(f"| {title} | " + " | ".join("-" if v is None else f"{100 * v:.1f}%" for v in cells) + " |")
    lines.append("| molecules | " + " | ".join(str(report[k].get("n", "-")) for k, _ in columns) + " |")
    return "\n".join(lines)


def data_only() -> dict:
    from noisecraft.molecules.metrics import dataset_metrics

    return {"data-train": dataset_metrics("train").as_dict(), "data-test": dataset_metrics("test").as_dict(),
            "edm-qm9": EDM_QM9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a molecules run folder")
    parser.add_argument("--data-only", action="store_true", help="only the bundled data's own figures")
    parser.add_argument("--table", type=Path, help="print the markdown table of a JSON report and exit")
    parser.add_argument("--num", type=int, default=500)
    parser.add_argument("--motif-num", type=int, default=100)
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the run's)")
    parser.add_argument("--sdf", type=Path, default=None, help="write the first 32 generated molecules here")
    parser.add_argument("--png", type=Path, default=None, help="a picture of 16 generated molecules")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.table is not None:
        print(table(json.loads(args.table.read_text())))
        return
    if args.data_only:
        report = data_only()
        print(json.dumps(report, indent=1) + "\n\n" + table(report))
        return
    if args.run is None:
        parser.error("--run is required (or --data-only / --table)")
    from noisecraft.files import atomic_write_json
    from noisecraft.molecules.data import atom_mask, decode
    from noisecraft.molecules.io import save_molecules, write_png
    from noisecraft.molecules.metrics import dataset_metrics, molecule_metrics, training_reference
    from noisecraft.molecules.motif import scaffold
    from noisecraft.pipelines import Generation, Request, generate, load

    t0 = time.process_time()
    run = load(args.run)
    reference = training_reference("train")
    result = generate(run, Request(num=args.num, seed=1000, steps=args.steps))
    molecules = decode(result.images, atom_mask(result.images))
    t_gen = time.process_time() - t0
    report = {"run": args.run, "step": result.parameters["model_step"], "sampler": result.parameters["sampler"],
              "steps": result.parameters["steps"], "num": args.num,
              "model": molecule_metrics(molecules, reference).as_dict(),
              "data-train": dataset_metrics("train").as_dict(), "data-test": dataset_metrics("test").as_dict(),
              "edm-qm9": EDM_QM9, "cpu_seconds_generate": round(t_gen, 1)}
    if args.motif_num:
        motif, source = motif_of_test_molecule()
        t1 = time.process_time()
        out = scaffold(run, motif, Request(num=args.motif_num, seed=2000, steps=args.steps))
        scaffolds = decode(out.images, atom_mask(out.images))
        m = len(motif.symbols)
        drift = max(float(np.abs(s.positions[:m] - motif.positions).max()) for s in scaffolds)
        report["motif"] = {"source_smiles": source, "motif_atoms": list(motif.symbols), "max_motif_drift": drift,
                           "types_kept": all(s.symbols[:m] == motif.symbols for s in scaffolds),
                           **molecule_metrics(scaffolds, reference).as_dict(),
                           "cpu_seconds": round(time.process_time() - t1, 1)}
    report.update(cpu_seconds_total=round(time.process_time() - t0, 1), date=date.today().isoformat(),
                  machine=machine(), torch_threads=1)
    print(json.dumps(report, indent=1))
    if args.json is not None:
        atomic_write_json(args.json, report)
    if args.sdf is not None:
        save_molecules(molecules[:32], args.sdf, [f"{run.config.name} seed {s}" for s in result.seeds[:32]])
    if args.png is not None:
        first = Generation(result.images[:16], result.seeds[:16], result.parameters, result.samples[:16])
        write_png(first, args.png, run)


if __name__ == "__main__":
    main()
