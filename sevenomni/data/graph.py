"""From ``ase.Atoms`` to a radius graph the model consumes, and batching of graphs.

A graph is a :class:`torch_geometric.data.Data` with the fields :mod:`sevenomni.core.keys` declares
with source ``"graph"`` (their shapes, dtypes and meaning there): atomic numbers, positions, cell,
periodicity, atom count, ``edge_index`` (row 0 the neighbour j, sender; row 1 the centre i, receiver)
and ``cell_shift`` (integer lattice offsets S so that r_ij = pos[j] - pos[i] + S · cell).

Labels (``energy``, ``forces``, ``stress``) and the ``task`` index are attached by the data
layer. Batching is PyG's: ``edge_index`` is offset per graph and ``batch`` maps nodes to graphs.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import vesin
from ase import Atoms
from torch_geometric.data import Batch, Data

from sevenomni.core.base import MAX_CELL_LIST_BINS, MAX_PERIODIC_IMAGES, MAX_SEARCHED_BIN_PAIRS, MIN_CELL_VOLUME
from sevenomni.core.keys import ATOMIC_NUMBERS, CELL, CELL_SHIFT, EDGE_INDEX, NUM_ATOMS, PBC, POS


class StructureError(ValueError):
    """A structure no graph can be built for (non-finite, empty, degenerate or too extreme a cell);
    the message names the structure."""


def has_stress(atoms: Atoms) -> bool:
    """Stress is defined for a structure with some periodicity and a cell with volume."""
    return bool(atoms.pbc.any()) and abs(atoms.cell.volume) > MIN_CELL_VOLUME


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


class SearchGrid(NamedTuple):
    """The cell list that vesin lays over a structure for a cutoff (see :func:`search_grid`)."""

    extents: np.ndarray  # Å along each cell direction
    bins: np.ndarray  # cutoff-sized bins along each direction
    reach: np.ndarray  # bins searched on each side of a bin, along each direction

    @property
    def total_bins(self) -> float:
        return float(np.prod(self.bins))

    @property
    def searched_pairs(self) -> float:
        """(bin, neighbouring bin) pairs the search visits."""
        return self.total_bins * float(np.prod(2.0 * self.reach + 1.0))


def search_grid(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> SearchGrid:
    """The cell list vesin builds for a structure (that ``check_structure`` accepts), as vesin does.

    Along a periodic cell direction its extent is the distance between lattice planes (the other
    periodic vectors, and unit vectors normal to them, spanning the planes); along a non-periodic
    one, 1.01 × the atoms' spread along that Cartesian axis, at least 1 Å. Each direction holds
    ``extent // cutoff`` bins (at least one), and the search reaches as many bins on either side
    as the cutoff spans; with mixed periodicity, every bin of a non-periodic direction.
    """
    with np.errstate(over="ignore"):
        spread = positions.max(axis=0) - positions.min(axis=0)
        extents = np.maximum(1.0, 1.01 * np.where(spread < 1e-6, 1.0, spread))
    if pbc.all():
        extents = 1.0 / np.sqrt((np.linalg.inv(cell) ** 2).sum(axis=0))
    elif pbc.any():
        periodic = cell[pbc]
        _, _, rows = np.linalg.svd(periodic)
        basis = np.concatenate([periodic, rows[len(periodic):]])  # orthonormal completion of the periodic span
        extents[pbc] = 1.0 / np.sqrt((np.linalg.inv(basis) ** 2).sum(axis=0))[: len(periodic)]
    with np.errstate(over="ignore", invalid="ignore"):  # coordinates near the float limit: inf bins, refused
        bins = np.maximum(1.0, np.floor(extents / cutoff))
        reach = np.maximum(1.0, np.ceil(cutoff * bins / extents))
    if pbc.any() and not pbc.all():
        reach[~pbc] = np.maximum(reach[~pbc], bins[~pbc] - 1.0)
    return SearchGrid(extents, bins, reach)


def check_cell(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float, label: str = "structure"
) -> None:
    """Refuse (StructureError) a structure whose neighbour search at ``cutoff`` exceeds the limits:
    MAX_CELL_LIST_BINS bins, MAX_SEARCHED_BIN_PAIRS bin pairs searched, or MAX_PERIODIC_IMAGES
    periodic images of its cell within the cutoff.

    Called before every neighbour list: beyond the bins, vesin shrinks its grid into a degenerate
    one and dies by SIGFPE (a very thin or very long cell, atoms far apart); beyond the pairs, the
    search does not end; beyond the images (a cell much thinner than the cutoff), the edges explode.
    """
    grid = search_grid(positions, cell, pbc, cutoff)
    with np.errstate(over="ignore"):
        images = float(np.prod(2.0 * np.ceil(cutoff / grid.extents[pbc]) + 1.0))
    if grid.total_bins <= MAX_CELL_LIST_BINS and images <= MAX_PERIODIC_IMAGES and (
        grid.searched_pairs <= MAX_SEARCHED_BIN_PAIRS
    ):
        return
    size = " × ".join(f"{e:.3g}" for e in grid.extents)
    if not grid.total_bins <= MAX_CELL_LIST_BINS:
        raise StructureError(
            f"{label}: too large a cell for a cutoff of {cutoff:g} Å: its extent ({size} Å) would need "
            f"{grid.total_bins:.3g} neighbour-search bins, at most {MAX_CELL_LIST_BINS:,} are allowed"
        )
    if not images <= MAX_PERIODIC_IMAGES:
        raise StructureError(
            f"{label}: too thin a periodic cell for a cutoff of {cutoff:g} Å: its extent ({size} Å) "
            f"would need {images:.3g} periodic images within the cutoff, at most {MAX_PERIODIC_IMAGES:,} are allowed"
        )
    if not grid.searched_pairs <= MAX_SEARCHED_BIN_PAIRS:
        raise StructureError(
            f"{label}: too wide a neighbour search for a cutoff of {cutoff:g} Å: its extent ({size} Å, "
            f"pbc {pbc.astype(int).tolist()}) would need {grid.searched_pairs:.3g} bin pairs searched, at most "
            f"{MAX_SEARCHED_BIN_PAIRS:,} are allowed"
        )


def neighbor_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i, j, S) with |pos[j] - pos[i] + S·cell| < cutoff, i ≠ j or S ≠ 0.

    Uses vesin (cell lists in C++), which handles triclinic cells, mixed periodicity and cells
    smaller than the cutoff (an atom then sees several images of itself and of others). Pairs come
    sorted by i (the receiver), so that the scatter into receivers writes each output row in one run.
    """
    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=True, sorted=True)
    i, j, shifts = calculator.compute(
        points=np.ascontiguousarray(positions, dtype=np.float64),
        box=np.ascontiguousarray(cell, dtype=np.float64),
        periodic=[bool(p) for p in pbc],
        quantities="ijS",
    )
    return i.astype(np.int64), j.astype(np.int64), shifts.astype(np.int64)


def device_neighbor_lists() -> bool:
    """Whether neighbour lists can be built on a GPU (``vesin-torch``, in the ``cuda`` extra)."""
    try:
        import vesin_torch  # noqa: F401
    except ImportError:
        return False
    return True


def tensor_neighbor_list(
    positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor, cutoff: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`neighbor_list` on tensors, computed on their device (vesin-torch; CUDA or CPU)."""
    from vesin_torch import NeighborList

    i, j, shifts = NeighborList(cutoff=float(cutoff), full_list=True, sorted=True).compute(
        points=positions, box=cell, periodic=pbc, quantities="ijS"
    )
    return i.long(), j.long(), shifts


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


def _search_cutoff(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, least: float) -> float:
    """Of ``least`` and its doublings (up to one bin), the cutoff whose cell list stays within
    MAX_CELL_LIST_BINS and searches the fewest bin pairs."""
    candidates, cutoff = [], least
    while True:
        grid = search_grid(positions, cell, pbc, cutoff)
        if grid.total_bins <= MAX_CELL_LIST_BINS:
            candidates.append((grid.searched_pairs, cutoff))
        if grid.total_bins <= 1:
            return min(candidates)[1]
        cutoff *= 2.0


def _closest_in_neighbour_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, within: float
) -> tuple[int, int, np.ndarray, float] | None:
    """Closest pair among the neighbour pairs of a cell list (cutoff ≥ ``within``); None if none."""
    n = len(positions)
    volume = abs(np.linalg.det(cell)) if pbc.all() else float(np.prod(np.ptp(positions, axis=0) + 1.0))
    cutoff = _search_cutoff(positions, cell, pbc, max(float(within), (volume / n) ** (1 / 3)))
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


def atoms_to_graph(
    atoms: Atoms, cutoff: float, label: str | None = None, device: torch.device | str | None = None
) -> Data:
    """Build the radius graph of one structure (no labels), checked on the host.

    With a CUDA ``device`` and vesin-torch installed, the neighbour list is computed on that device
    and the whole graph is made there.
    """
    positions = np.asarray(atoms.get_positions(), dtype=np.float64)
    cell = np.asarray(atoms.get_cell().array, dtype=np.float64)
    pbc = np.asarray(atoms.get_pbc(), dtype=bool)
    label = label or atoms.get_chemical_formula() or "structure"
    check_structure(positions, cell, pbc, label)
    check_cell(positions, cell, pbc, cutoff, label)
    on_gpu = device is not None and torch.device(device).type == "cuda" and device_neighbor_lists()
    return arrays_to_graph(atoms.get_atomic_numbers(), positions, cell, pbc, cutoff, torch.device(device) if on_gpu else None)


def arrays_to_graph(
    atomic_numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float,
    device: torch.device | None = None,
) -> Data:
    """Build the radius graph from plain arrays (already validated). With a ``device``, the graph's
    tensors are made there and its neighbour list computed there (vesin-torch)."""
    def tensor(values, dtype):
        return torch.as_tensor(np.asarray(values), dtype=dtype, device=device)

    position_tensor, cell_tensor = tensor(positions, torch.float64), tensor(cell, torch.float64)
    if device is None:
        i, j, shifts = (torch.as_tensor(a) for a in neighbor_list(positions, cell, pbc, cutoff))
    else:
        i, j, shifts = tensor_neighbor_list(position_tensor, cell_tensor, tensor(pbc, torch.bool), cutoff)
    return Data(
        **{
            ATOMIC_NUMBERS: tensor(atomic_numbers, torch.long),
            POS: position_tensor,
            CELL: cell_tensor.view(1, 3, 3),
            PBC: tensor(pbc, torch.bool).view(1, 3),
            NUM_ATOMS: tensor([len(positions)], torch.long),
            EDGE_INDEX: torch.stack([j, i]).long(),
            CELL_SHIFT: shifts.to(torch.float64),
        },
        num_nodes=len(positions),  # torch_geometric's own, not a field
    )


def collate(graphs: list[Data]) -> Batch:
    """Batch graphs of different sizes into one disjoint graph."""
    return Batch.from_data_list(graphs)
