"""From ``ase.Atoms`` to a radius graph the model consumes, and batching of graphs.

A graph is a :class:`torch_geometric.data.Data` with

* ``atomic_numbers`` [N], ``pos`` [N, 3], ``cell`` [1, 3, 3], ``pbc`` [1, 3], ``num_atoms`` [1];
* ``edge_index`` [2, E]: row 0 the neighbour j (sender), row 1 the centre i (receiver);
* ``cell_shift`` [E, 3]: integer lattice offsets S so that r_ij = pos[j] - pos[i] + S · cell.

Labels (``energy``, ``forces``, ``stress``) and the ``task`` index are attached by the data
layer. Batching is PyG's: ``edge_index`` is offset per graph and ``batch`` maps nodes to graphs.
"""

from __future__ import annotations

import numpy as np
import torch
import vesin
from ase import Atoms
from torch_geometric.data import Batch, Data

from sevenomni.base import MAX_CELL_LIST_BINS, MAX_PERIODIC_IMAGES, MIN_CELL_VOLUME


class StructureError(ValueError):
    """A structure no graph can be built for (non-finite, empty, degenerate or too extreme a cell);
    the message names the structure."""


def check_structure(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, label: str = "structure"
) -> None:
    """Reject non-finite coordinates and degenerate periodic lattices with a clear message (StructureError)."""
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise StructureError(f"{label}: positions must have shape (N, 3), got {positions.shape}")
    if len(positions) == 0:
        raise StructureError(f"{label}: has no atoms")
    if not np.isfinite(positions).all():
        raise StructureError(f"{label}: positions contain NaN or inf")
    if not np.isfinite(cell).all():
        raise StructureError(f"{label}: cell contains NaN or inf")
    if pbc.any():
        lattice = cell[pbc]
        gram = np.linalg.det(lattice @ lattice.T)
        if gram <= MIN_CELL_VOLUME**2:
            raise StructureError(
                f"{label}: periodic cell has zero volume along its periodic directions "
                f"(pbc={pbc.tolist()}, cell={cell.tolist()})"
            )


def search_extents(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> tuple[np.ndarray, int]:
    """The extent (Å) of the neighbour search along each direction, and how many are periodic (the
    last ones): the spread of the atoms along the non-periodic directions, then the distance between
    lattice planes along each periodic one (of a structure that ``check_structure`` accepts)."""
    periodic = cell[pbc]
    # an orthonormal basis completing the periodic vectors' span: the non-periodic directions
    _, _, rows = np.linalg.svd(periodic if len(periodic) else np.zeros((1, 3)))
    others = rows[len(periodic):]
    extents = [np.ptp(positions @ direction) for direction in others]
    if len(periodic):
        # plane spacing of periodic vector k = its component normal to the other vectors of the basis
        basis = np.concatenate([periodic, others])
        inverse = np.linalg.inv(basis)
        extents += list(1.0 / np.linalg.norm(inverse[:, : len(periodic)], axis=0))
    return np.asarray(extents, dtype=np.float64), len(periodic)


def search_bins(extents: np.ndarray, cutoff: float) -> float:
    """How many cutoff-sized bins a cell list lays over ``extents``."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return float(np.prod(np.maximum(1.0, np.floor(extents / cutoff))))


def check_cell(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float, label: str = "structure"
) -> None:
    """Refuse (StructureError) a structure whose neighbour search at ``cutoff`` would need more than
    MAX_CELL_LIST_BINS cutoff-sized bins or MAX_PERIODIC_IMAGES periodic images of its cell.

    Called before every neighbour list: vesin divides a very thin cell, or one very long in some
    direction, into a degenerate grid and dies by SIGFPE; a cell much thinner than the cutoff makes
    the images (and the edges) explode.
    """
    extents, periodic = search_extents(positions, cell, pbc)
    with np.errstate(over="ignore", divide="ignore"):
        spacing = extents[len(extents) - periodic :]
        images = float(np.prod(2.0 * np.ceil(cutoff / spacing) + 1.0))
    bins = search_bins(extents, cutoff)
    size = " × ".join(f"{e:.3g}" for e in extents)
    if not bins <= MAX_CELL_LIST_BINS:
        raise StructureError(
            f"{label}: too large a cell for a cutoff of {cutoff:g} Å: its extent ({size} Å) would need "
            f"{bins:.3g} neighbour-search bins, at most {MAX_CELL_LIST_BINS:,} are allowed"
        )
    if not images <= MAX_PERIODIC_IMAGES:
        raise StructureError(
            f"{label}: too thin a periodic cell for a cutoff of {cutoff:g} Å: its plane spacings "
            f"({', '.join(f'{d:.3g}' for d in spacing)} Å) would need {images:.3g} periodic images "
            f"within the cutoff, at most {MAX_PERIODIC_IMAGES:,} are allowed"
        )


def neighbor_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i, j, S) with |pos[j] - pos[i] + S·cell| < cutoff, i ≠ j or S ≠ 0.

    Uses vesin (cell lists in C++), which handles triclinic cells, mixed periodicity and cells
    smaller than the cutoff (an atom then sees several images of itself and of others).
    """
    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, shifts = calculator.compute(
        points=np.ascontiguousarray(positions, dtype=np.float64),
        box=np.ascontiguousarray(cell, dtype=np.float64),
        periodic=[bool(p) for p in pbc],
        quantities="ijS",
    )
    return i.astype(np.int64), j.astype(np.int64), shifts.astype(np.int64)


# Up to this many atoms, comparing all pairs with numpy is faster than building a cell list.
_ALL_PAIRS_ATOMS = 32


def closest_pair(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, within: float
) -> tuple[int, int, np.ndarray, float] | None:
    """The closest two atoms nearer than ``within`` Å, periodic images included, as (i, j, S,
    distance) with i ≤ j and distance = |pos[j] - pos[i] + S·cell|; None if no pair is that close.

    Small structures compare all pairs at once (for a periodic cell whose planes are more than
    2·``within`` apart, the rounded fractional difference is the only image that can be that
    close); others use a half neighbour list (vesin) whose cutoff is raised to the mean
    interatomic spacing, so that its cell list holds about one atom per bin.
    """
    positions = np.asarray(positions, dtype=np.float64)
    n = len(positions)
    if within <= 0 or (n < 2 and not pbc.any()):
        return None
    inverse = np.linalg.inv(cell) if n <= _ALL_PAIRS_ATOMS and pbc.all() else None
    if n <= _ALL_PAIRS_ATOMS and not pbc.any():
        found = _closest_of_all_pairs(positions, None, None)
    elif inverse is not None and within < 0.5 * _plane_spacing(inverse):
        found = _closest_of_all_pairs(positions, cell, inverse)
    else:
        found = _closest_in_neighbour_list(positions, cell, pbc, within)
    if found is None or found[3] >= within:
        return None
    i, j, shift, distance = found
    return (i, j, shift, distance) if i <= j else (j, i, -shift, distance)


def _plane_spacing(inverse_cell: np.ndarray) -> float:
    """The smallest distance between lattice planes (1 / the longest reciprocal vector)."""
    return float(1.0 / np.sqrt((inverse_cell * inverse_cell).sum(axis=0)).max())


def _closest_of_all_pairs(
    positions: np.ndarray, cell: np.ndarray | None, inverse_cell: np.ndarray | None
) -> tuple[int, int, np.ndarray, float]:
    """Closest pair over all pairs; with a cell, each pair's minimum image by rounding."""
    if cell is None:
        vectors = positions[None, :] - positions[:, None]
        shifts = np.zeros(vectors.shape, dtype=np.int64)
    else:
        fractional = positions @ inverse_cell
        differences = fractional[None, :] - fractional[:, None]
        shifts = -np.rint(differences)
        vectors = (differences + shifts) @ cell
    squared = np.einsum("ijk,ijk->ij", vectors, vectors)
    np.fill_diagonal(squared, np.inf)
    i, j = np.unravel_index(int(np.argmin(squared)), squared.shape)
    return int(i), int(j), shifts[i, j].astype(np.int64), float(np.sqrt(squared[i, j]))


def _closest_in_neighbour_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, within: float
) -> tuple[int, int, np.ndarray, float] | None:
    """Closest pair among the neighbour pairs of a cell list (cutoff ≥ ``within``); None if none."""
    n = len(positions)
    volume = abs(np.linalg.det(cell)) if pbc.all() else float(np.prod(np.ptp(positions, axis=0) + 1.0))
    cutoff = max(float(within), (volume / n) ** (1 / 3))
    extents, _ = search_extents(positions, cell, pbc)
    while search_bins(extents, cutoff) > MAX_CELL_LIST_BINS:  # a coarser grid keeps vesin's within bounds
        cutoff *= 2.0
    search = vesin.NeighborList(cutoff=cutoff, full_list=False)
    i, j, shifts, distances = search.compute(
        points=np.ascontiguousarray(positions), box=np.ascontiguousarray(cell, dtype=np.float64),
        periodic=[bool(p) for p in pbc], quantities="ijSd",
    )
    if not len(distances):
        return None
    k = int(np.argmin(distances))
    return int(i[k]), int(j[k]), shifts[k].astype(np.int64), float(distances[k])


def describe_pair(i: int, j: int, shift: np.ndarray, distance: float) -> str:
    """``closest_pair``'s result in words."""
    if i == j:
        return f"atom {i} is {distance:.4f} Å from its own periodic image {shift.tolist()}"
    image = f" through the periodic image {shift.tolist()}" if shift.any() else ""
    return f"atoms {i} and {j} are {distance:.4f} Å apart{image}"


def atoms_to_graph(atoms: Atoms, cutoff: float, label: str | None = None) -> Data:
    """Build the radius graph of one structure (no labels)."""
    positions = np.asarray(atoms.get_positions(), dtype=np.float64)
    cell = np.asarray(atoms.get_cell().array, dtype=np.float64)
    pbc = np.asarray(atoms.get_pbc(), dtype=bool)
    label = label or atoms.get_chemical_formula() or "structure"
    check_structure(positions, cell, pbc, label)
    check_cell(positions, cell, pbc, cutoff, label)
    return arrays_to_graph(atoms.get_atomic_numbers(), positions, cell, pbc, cutoff)


def arrays_to_graph(
    atomic_numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> Data:
    """Build the radius graph from plain arrays (already validated)."""
    i, j, shifts = neighbor_list(positions, cell, pbc, cutoff)
    return Data(
        atomic_numbers=torch.as_tensor(np.asarray(atomic_numbers), dtype=torch.long),
        pos=torch.as_tensor(positions, dtype=torch.float64),
        cell=torch.as_tensor(cell, dtype=torch.float64).view(1, 3, 3),
        pbc=torch.as_tensor(pbc, dtype=torch.bool).view(1, 3),
        num_atoms=torch.tensor([len(positions)], dtype=torch.long),
        edge_index=torch.as_tensor(np.stack([j, i]), dtype=torch.long),
        cell_shift=torch.as_tensor(shifts, dtype=torch.float64),
        num_nodes=len(positions),
    )


def collate(graphs: list[Data]) -> Batch:
    """Batch graphs of different sizes into one disjoint graph."""
    return Batch.from_data_list(graphs)
