"""Motif scaffolding: some atoms' types and positions fixed, the rest of the molecule generated around them.

The inpainting-style replacement method (Song et al. 2021, "Score-based generative modeling through SDEs",
App. I.2, eq. 49; the "replacement" baseline of Trippe et al. 2023, "Diffusion probabilistic modeling of protein
backbones in 3D for the motif-scaffolding problem", Sec. 3, which also works in the zero centre-of-mass frame), made
exact with respect to EDM's zero-CoM subspace (Hoogeboom et al. 2022, Sec. 3.2). RFdiffusion (Watson et al. 2023)
instead fine-tunes a network conditioned on the motif; replacement needs no training and works with any molecule
run and any sampler.

Notation: x (3 + K, N) a molecule tensor (`noisecraft.molecules.data`), the motif in columns 0..M-1; V the
zero-CoM subspace the sampler's state lives in (`noisecraft.conditions.atoms.zero_com`, P its projection). The
motif fixes its atom types and its positions up to a common translation (the model is translation invariant, and
its state has no absolute frame). So the known part of x is

    P_K x = (motif positions minus their own mean, motif type rows; zero for every other column),

an orthogonal projection with P_K V ⊂ V and P_K P = P P_K = P_K (the motif's centred positions ignore a global
translation and sum to zero). V splits orthogonally into the known part (3 (M - 1) + M K dimensions: the motif's
shape and types) and the unknown part (the other atoms, and the motif's centroid relative to them). The
replacement denoiser, with y the motif tensor and z fresh unit noise per call,

    D'(x, sigma) = D(x - P_K x + P_K y + sigma P_K z, sigma) - P_K D(...) + P_K y

feeds the network the motif noised to sigma within the subspace (the noised motif aligned in the CoM frame:
its centroid where the state's motif centroid is) and returns an estimate whose known part is the motif. Every
sampler updates x by linear combinations of x, estimates and noise, so the state stays in V (`projected` wraps
D' with P) and its known part ends at P_K y: the motif's shape exactly. Finally the molecule is translated so the
motif's centroid is the given one and the motif columns are pasted (positions and types), so the motif atoms are
where they were given, to the bit. As for images, replacement is not an exact sampler of
p(scaffold | motif): it ignores grad log p(motif | x_t) (Trippe et al. 2023, Sec. 3; Lugmayr et al. 2022).

    noisecraft sample --checkpoint runs/molecules --motif motif.xyz --num 16 --out scaffolds.sdf
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from noisecraft.core.random import make_generators, randn_like
from noisecraft.errors import NoisecraftError
from noisecraft.molecules.data import COORD_SCALE, TYPE_SCALE, Molecule
from noisecraft.molecules.elements import ELEMENTS, MoleculeError, element_index


def read_motif(path: str | Path) -> Molecule:
    """The one molecule of an .xyz or .sdf file; MoleculeError for another format, several molecules or none."""
    from noisecraft.molecules.io import read_sdf, read_xyz

    path = Path(path)
    readers = {".xyz": read_xyz, ".sdf": read_sdf}
    if path.suffix.lower() not in readers:
        raise MoleculeError(f"motif {str(path)!r}: give an .xyz or .sdf file, got {path.suffix or 'no extension'!r}")
    if not path.is_file():
        raise MoleculeError(f"motif {str(path)!r}: no such file")
    molecules = readers[path.suffix.lower()](path)
    if len(molecules) != 1:
        raise MoleculeError(f"motif {str(path)!r} holds {len(molecules)} molecules; give exactly one")
    return molecules[0]


def motif_tensor(motif: Molecule, n_max: int) -> Tensor:
    """y (1, 3 + K, n_max): the motif's positions (angstrom times COORD_SCALE, as given: not centred) and one-hot
    types in columns 0..M-1, zero elsewhere; MoleculeError for a motif larger than the model's n_max atoms."""
    m = len(motif.symbols)
    if m > n_max:
        raise MoleculeError(f"the motif has {m} atoms; the model makes molecules of at most {n_max} atoms")
    if m < 1:
        raise MoleculeError("the motif has no atoms")
    y = torch.zeros(1, 3 + len(ELEMENTS), n_max)
    y[0, :3, :m] = torch.as_tensor(np.asarray(motif.positions), dtype=torch.float64).T.float() * COORD_SCALE
    y[0, 3 + torch.tensor([element_index(s) for s in motif.symbols]), torch.arange(m)] = TYPE_SCALE
    return y


def known_part(x: Tensor, m: int) -> Tensor:
    """P_K x (module docstring): columns 0..m-1 with their positions centred on their own mean, all else zero."""
    pos = x[:, :3, :m]
    out = torch.zeros_like(x)
    out[:, :3, :m] = pos - pos.mean(-1, keepdim=True)
    out[:, 3:, :m] = x[:, 3:, :m]
    return out


class MotifDenoiser:
    """D'(x, sigma, cond) = D(x - P_K x + P_K y + sigma P_K z) - P_K D(...) + P_K y (module docstring).

    denoiser:  the run's denoiser
    y:         the motif tensor (1, 3 + K, N) (`motif_tensor`)
    m:         the motif's atom count M (its columns are 0..M-1)
    generator: where z comes from (one generator per sample, or one)
    """

    def __init__(self, denoiser, y: Tensor, m: int, *, generator=None) -> None:
        self.denoiser, self.m, self.generator = denoiser, m, generator
        self.known = known_part(y, m)  # P_K y

    def __call__(self, x: Tensor, sigma, cond=None) -> Tensor:
        known = self.known.to(x)
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        s = s.reshape(-1, 1, 1) if s.ndim else s
        z = known_part(randn_like(x, self.generator), self.m)
        d = self.denoiser(x - known_part(x, self.m) + known + s * z, sigma, cond).to(x.dtype)
        return d - known_part(d, self.m) + known


def place(x: Tensor, y: Tensor, m: int, mask: Tensor) -> Tensor:
    """The sampled molecules x (B, 3 + K, N) translated so their motif centroid is y's, then y's motif columns
    pasted (positions and types, exactly); padding columns (mask 0) stay zero."""
    y = y.to(x)
    shift = y[:, :3, :m].mean(-1, keepdim=True) - x[:, :3, :m].mean(-1, keepdim=True)  # (B, 3, 1)
    out = x.clone()
    out[:, :3] = (x[:, :3] + shift) * mask.to(x).unsqueeze(1)
    out[:, :, :m] = y[:, :, :m]
    return out


def atom_counts(run, request, m: int) -> list[int]:
    """Each molecule's atom count: request.conditions["atoms"] (an int or one per molecule, each >= m), else
    drawn from the training histogram restricted to counts >= m (p(M | M >= m); m itself if none is)."""
    atoms = run.conditions.get("atoms")
    value = (request.conditions or {}).get("atoms")
    if value is not None:
        counts = [value] * request.num if isinstance(value, int) else list(value)
        counts = counts * request.num if len(counts) == 1 else counts
        small = [c for c in counts if isinstance(c, int) and c < m]
        if small:
            raise MoleculeError(f"atom count {small[0]} is smaller than the motif's {m} atoms")
        return counts
    sizes = [n for n in atoms.histogram if n >= m]
    if not sizes:
        return [m] * request.num
    p = np.array([atoms.histogram[n] for n in sizes], dtype=np.float64)
    p /= p.sum()
    return [int(np.random.default_rng(request.seed + i).choice(sizes, p=p)) for i in range(request.num)]


def check_molecule_run(run) -> None:
    """NoisecraftError unless the run is a molecule run (it has the atoms condition)."""
    if run.conditions.get("atoms") is None:
        raise NoisecraftError(f"motif scaffolding needs a molecule model (preset 'molecules'); model "
                              f"{run.config.name!r} is not one")


@torch.no_grad()
def scaffold(run, motif: Molecule | str | Path, request=None, *, callback=None):
    """`request.num` molecules built around `motif` (a Molecule, or an .xyz / .sdf file of one): its atoms keep
    their elements and positions exactly (module docstring). The request's sampler, steps, seed (molecule i from
    seed + i) and atom counts (conditions["atoms"], each >= the motif's) apply. Returns a pipelines.Generation."""
    from noisecraft import samplers
    from noisecraft.pipelines import Generation, Request, conditioned, plan
    from noisecraft.pipelines.generate import batch_cond, projected

    check_molecule_run(run)
    motif = motif if isinstance(motif, Molecule) else read_motif(motif)
    request = request or Request()
    y = motif_tensor(motif, int(run.data_shape[-1]))
    m = len(motif.symbols)
    counts = atom_counts(run, request, m)
    request = replace(request, conditions={**(request.conditions or {}), "atoms": counts})
    denoiser, cond = conditioned(run, request)
    p = plan(run, request)
    fn, project, out = samplers.get(p.sampler), run.conditions.project, []
    for start in range(0, request.num, request.batch_size):
        n = min(request.batch_size, request.num - start)
        gens = make_generators(request.seed + start, n)
        cb = batch_cond(cond, start, n, request.num)
        x = project(randn_like(torch.empty(n, *run.data_shape, device=run.device), gens) * float(p.sigmas[0]), cb)
        wrapped = projected(MotifDenoiser(denoiser, y, m, generator=gens), project)
        x = project(fn(wrapped, x, p.sigmas, cond=cb, generator=gens, callback=callback, **p.options), cb)
        out.append(place(x.float(), y.to(x.device), m, cb["atom_mask"]).cpu())
    images = torch.cat(out)
    parameters = {"sampler": p.sampler, "steps": len(p.sigmas) - 1, "step_schedule": p.step_schedule,
                  "options": p.options, "conditioning": request.describe(), "model": run.config.name,
                  "model_step": run.step, "ema": run.ema, "seed": request.seed, "num": request.num,
                  "motif": {"atoms": m, "symbols": list(motif.symbols)}}
    return Generation(images, [request.seed + i for i in range(request.num)], parameters, images)


def write_scaffolds(run, request, motif_path, out, *, callback=None) -> Path:
    """`noisecraft sample --motif FILE --out OUT`: the motif read and the output format checked before sampling,
    then the scaffolds written by the run's writer for OUT (.sdf, .xyz, .png), atomically."""
    from noisecraft.pipelines.outputs import writer_for

    check_molecule_run(run)
    writer = writer_for(run, out)
    motif = read_motif(motif_path)
    if writer is None:
        raise MoleculeError(f"{str(out)!r}: molecules are written as .sdf, .xyz or .png")
    return writer(scaffold(run, motif, request, callback=callback), Path(out), run)


__all__ = ["MotifDenoiser", "atom_counts", "known_part", "motif_tensor", "place", "read_motif", "scaffold",
           "write_scaffolds"]
