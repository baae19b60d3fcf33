"""Small structures of every periodicity (a skewed crystal smaller than the cutoff, diamond, a
molecule, a slab) for the physics checks of :mod:`sevenomni.testing.physics`."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import bulk, fcc111, molecule


def triclinic_crystal(seed: int = 0) -> Atoms:
    """A small skewed SiC-like cell, smaller than the cutoff along one axis."""
    rng = np.random.default_rng(seed)
    cell = np.array([[3.1, 0.0, 0.0], [0.9, 2.9, 0.0], [0.4, 0.7, 3.3]])
    atoms = Atoms("SiCSiC", scaled_positions=rng.random((4, 3)), cell=cell, pbc=True)
    return atoms


def rattled(atoms: Atoms, amplitude: float = 0.05, seed: int = 0) -> Atoms:
    atoms = atoms.copy()
    atoms.rattle(amplitude, seed=seed)
    return atoms


def structures() -> dict[str, Atoms]:
    slab = fcc111("Al", (2, 2, 2), vacuum=5.0)
    slab.set_chemical_symbols(["Si", "C"] * 4)
    slab.pbc = [True, True, False]
    return {
        "triclinic": triclinic_crystal(),
        "diamond": rattled(bulk("C", "diamond", a=3.57), 0.05),
        "molecule": rattled(molecule("CH3CH2OH"), 0.05),
        "slab": rattled(slab, 0.05),
    }
