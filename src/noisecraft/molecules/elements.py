"""The elements a molecule model knows, their valences, and bond orders from interatomic distances.

The element set is QM9's (H, C, N, O, F; Ramakrishnan et al. 2014). Bond orders from distances follow the
lookup of Hoogeboom et al. 2022 (EDM, App. "Molecule stability"; their `bond_analyze`, after typical bond
lengths of Allen et al. 1987): two atoms at distance d (pm) are bonded with order 1 when d < l1 + 10 pm, order 2
when also d < l2 + 5 pm and order 3 when also d < l3 + 3 pm (l_k the typical length of a k-fold bond between the
two elements), else not bonded. An atom is stable when the sum of its bond orders equals its element's valence.
"""

from __future__ import annotations

import numpy as np

from noisecraft.errors import NoisecraftError

ELEMENTS: tuple[str, ...] = ("H", "C", "N", "O", "F")
ATOMIC_NUMBER = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
VALENCE = {"H": 1, "C": 4, "N": 3, "O": 2, "F": 1}  # EDM's allowed bonds for QM9 (neutral atoms)
MARGINS_PM = (10.0, 5.0, 3.0)  # added to the single, double and triple bond lengths

# typical bond lengths in pm (EDM bond_analyze's bonds1, bonds2, bonds3 restricted to H, C, N, O, F)
_SINGLE = {"H": {"H": 74, "C": 109, "N": 101, "O": 96, "F": 92},
           "C": {"H": 109, "C": 154, "N": 147, "O": 143, "F": 135},
           "N": {"H": 101, "C": 147, "N": 145, "O": 140, "F": 136},
           "O": {"H": 96, "C": 143, "N": 140, "O": 148, "F": 142},
           "F": {"H": 92, "C": 135, "N": 136, "O": 142, "F": 142}}
_DOUBLE = {"C": {"C": 134, "N": 129, "O": 120}, "N": {"C": 129, "N": 125, "O": 121},
           "O": {"C": 120, "N": 121, "O": 121}}
_TRIPLE = {"C": {"C": 120, "N": 116, "O": 113}, "N": {"C": 116, "N": 110}, "O": {"C": 113}}


class MoleculeError(NoisecraftError):
    """A molecule that cannot be used: an unknown element, a wrong shape, non-finite coordinates."""


def element_index(symbol: str) -> int:
    """The type index of an element symbol; MoleculeError naming the allowed elements for any other."""
    if symbol not in ELEMENTS:
        raise MoleculeError(f"unknown element {symbol!r}; allowed elements: {', '.join(ELEMENTS)}")
    return ELEMENTS.index(symbol)


def bond_order(a: str, b: str, distance_angstrom: float) -> int:
    """The bond order 0..3 of elements a, b at a distance in angstrom (module docstring)."""
    d = 100.0 * distance_angstrom
    single = _SINGLE[a][b]
    if d >= single + MARGINS_PM[0]:
        return 0
    double = _DOUBLE.get(a, {}).get(b)
    if double is None or d >= double + MARGINS_PM[1]:
        return 1
    triple = _TRIPLE.get(a, {}).get(b)
    if triple is None or d >= triple + MARGINS_PM[2]:
        return 2
    return 3


def bond_orders(symbols: list[str], positions: np.ndarray) -> np.ndarray:
    """(n, n) int matrix of bond orders between every pair of atoms (zero diagonal)."""
    n = len(symbols)
    pos = np.asarray(positions, dtype=np.float64)
    dist = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1))
    out = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = bond_order(symbols[i], symbols[j], float(dist[i, j]))
    return out
