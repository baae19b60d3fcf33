"""What LAMMPS' ML-IAP "unified" pair style hands a model, built here without LAMMPS.

:func:`rank_view` is one MPI rank's view of a periodic orthogonal box under a brick decomposition:
the atoms it owns, the ghost atoms (periodic images and other ranks' atoms) within ``halo`` of its
sub-domain, and the full pair list within the cutoff, ghosts' neighbours included
(``ghost_neighbours=False``: LAMMPS' ghost-neighbour flag 0). :class:`FakeData` accumulates forces
exactly as ``update_pair_forces`` does; :func:`run_ranks` sums energies over the ranks and folds
ghost forces back onto their atoms (LAMMPS' reverse communication).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from ase import Atoms


class FakeData:
    """The fields of LAMMPS' ``MLIAPDataPy`` the adapter uses."""

    def __init__(self, nlocal, elems, pair_i, pair_j, rij, natomneigh):
        self.nlocal = nlocal
        self.ntotal = len(elems)
        self.nlistatoms = nlocal
        self.iatoms = np.arange(nlocal, dtype=np.int32)
        self.natomneigh = natomneigh
        self.elems = np.asarray(elems, dtype=np.int32)
        self.pair_i = np.asarray(pair_i, dtype=np.int32)
        self.pair_j = np.asarray(pair_j, dtype=np.int32)
        self.jatoms = self.pair_j
        self.rij = np.asarray(rij, dtype=np.float64)
        self.npairs = len(self.pair_i)
        self.f = np.zeros((self.ntotal, 3))
        self.eflag, self.vflag = 1, 0
        self.energy = None
        self.eatoms = None

    def update_pair_forces(self, fij):
        np.add.at(self.f, self.pair_i, fij)
        np.add.at(self.f, self.pair_j, -fij)


def rank_view(atoms: Atoms, element_types, low, high, halo: float, cutoff: float, ghost_neighbours: bool = True):
    """(FakeData, index in ``atoms`` of each of its atoms) for the rank owning ``[low, high)`` (orthogonal cell)."""
    lengths = np.diag(atoms.cell.array)
    assert np.allclose(atoms.cell.array, np.diag(lengths)), "orthogonal cells only"
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    reach = [range(-math.ceil(halo / lengths[d]) - 1, math.ceil(halo / lengths[d]) + 2) if atoms.pbc[d] else [0]
             for d in range(3)]
    base = atoms.get_positions(wrap=True)
    positions, owners, is_image = [], [], []
    for shift in itertools.product(*reach):
        positions.append(base + np.asarray(shift) * lengths)
        owners.append(np.arange(len(atoms)))
        is_image.append(np.full(len(atoms), any(shift)))
    positions, owners, is_image = np.concatenate(positions), np.concatenate(owners), np.concatenate(is_image)
    inside = np.all((positions >= low) & (positions < high), axis=1)
    owned = inside & ~is_image
    ghost = ~owned & np.all((positions >= low - halo) & (positions < high + halo), axis=1)
    order = np.concatenate([np.flatnonzero(owned), np.flatnonzero(ghost)])
    positions, owners = positions[order], owners[order]
    nlocal = int(owned.sum())
    listed = len(order) if ghost_neighbours else nlocal
    delta = positions[None, :, :] - positions[:listed, None, :]
    distance = np.linalg.norm(delta, axis=-1)
    pair_i, pair_j = np.nonzero((distance < cutoff) & (distance > 0))
    symbols = atoms.get_chemical_symbols()
    elems = [element_types.index(symbols[o]) for o in owners]
    data = FakeData(nlocal, elems, pair_i, pair_j, delta[pair_i, pair_j], listed)
    return data, owners


def run_ranks(unified, atoms: Atoms, splits: int, halo: float, ghost_neighbours: bool = True):
    """(energy, forces, per-atom energies) from ``splits`` ranks cutting the box along x, as LAMMPS sums them."""
    lengths = np.diag(atoms.cell.array)
    energy, forces, energies = 0.0, np.zeros((len(atoms), 3)), np.zeros(len(atoms))
    for rank in range(splits):
        low = np.array([lengths[0] * rank / splits, 0.0, 0.0])
        high = np.array([lengths[0] * (rank + 1) / splits, lengths[1], lengths[2]])
        data, owners = rank_view(atoms, unified.element_types, low, high, halo, unified.cutoff, ghost_neighbours)
        unified.compute_forces(data)
        energy += data.energy
        np.add.at(forces, owners, data.f)
        energies[owners[: data.nlocal]] = data.eatoms
    return energy, forces, energies
