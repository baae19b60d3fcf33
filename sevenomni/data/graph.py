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

# Below this volume (Å³) a cell cannot carry a stress.
MIN_CELL_VOLUME = 1e-6


def check_structure(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, label: str = "structure"
) -> None:
    """Reject non-finite coordinates and degenerate periodic lattices with a clear message."""
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"{label}: positions must have shape (N, 3), got {positions.shape}")
    if len(positions) == 0:
        raise ValueError(f"{label}: has no atoms")
    if not np.isfinite(positions).all():
        raise ValueError(f"{label}: positions contain NaN or inf")
    if not np.isfinite(cell).all():
        raise ValueError(f"{label}: cell contains NaN or inf")
    if pbc.any():
        lattice = cell[pbc]
        gram = np.linalg.det(lattice @ lattice.T)
        if gram <= MIN_CELL_VOLUME**2:
            raise ValueError(
                f"{label}: periodic cell has zero volume along its periodic directions "
                f"(pbc={pbc.tolist()}, cell={cell.tolist()})"
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


def atoms_to_graph(atoms: Atoms, cutoff: float, label: str | None = None) -> Data:
    """Build the radius graph of one structure (no labels)."""
    positions = np.asarray(atoms.get_positions(), dtype=np.float64)
    cell = np.asarray(atoms.get_cell().array, dtype=np.float64)
    pbc = np.asarray(atoms.get_pbc(), dtype=bool)
    check_structure(positions, cell, pbc, label or atoms.get_chemical_formula())
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
