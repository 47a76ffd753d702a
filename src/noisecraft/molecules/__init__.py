"""Molecules: E(3)-equivariant diffusion over atom positions and types (Hoogeboom et al. 2022, EDM).

    noisecraft train --preset molecules --out runs/molecules
    noisecraft sample --checkpoint runs/molecules --num 64 --out mol.sdf        # or .xyz, or .png (a picture)
    noisecraft sample --checkpoint runs/molecules --motif motif.xyz --out scaffolds.sdf   # motif scaffolding

- `data`: the bundled small organic molecules (RDKit ETKDG + MMFF conformers) as padded tensors (3 + K, N_max);
- `condition`: the atom mask and the zero centre-of-mass projection (condition "atoms");
- `egnn`: the E(n)-equivariant graph network denoiser (model "egnn");
- `motif`: motif scaffolding (some atoms fixed, the rest generated around them);
- `io`: SDF / XYZ writers with bond inference; `metrics`: atom and molecule stability, validity, uniqueness,
  novelty.

This module imports nothing: the model and condition registries import its submodules.
"""
