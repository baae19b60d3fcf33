"""Dataset statistics: element reference energies, average neighbour count, force RMS.

Sources are stores (paths or :class:`StoreReader`) or :class:`LMDBDataset` (then only its items,
e.g. a training split, count). Reference energies and the force RMS come from the arrays and
sums stored at ingest, without opening records; neighbour counts build neighbour lists on a
seeded subsample.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from sevenomni.core.keys import FORCES
from sevenomni.data.dataset import LMDBDataset
from sevenomni.data.graph import check_cell, neighbor_list
from sevenomni.data.sampler import permutation_keys, permute
from sevenomni.data.store import LABEL_FORCES, MAX_Z, StoreReader

Source = StoreReader | LMDBDataset | str | os.PathLike
NUM_ELEMENTS = MAX_Z + 1
_CHUNK = 1 << 16


def _parts(sources: Source | Sequence[Source]) -> list[tuple[StoreReader, np.ndarray | None]]:
    """(store, indices in it or None for all) for every store behind ``sources``."""
    if isinstance(sources, (StoreReader, LMDBDataset, str, os.PathLike)):
        sources = [sources]
    parts: list[tuple[StoreReader, np.ndarray | None]] = []
    for source in sources:
        if isinstance(source, LMDBDataset):
            for k, reader in enumerate(source.readers):
                if source.indices is None:
                    parts.append((reader, None))
                    continue
                lo, hi = source.store_offsets[k], source.store_offsets[k + 1]
                flat = np.asarray(source.indices, dtype=np.int64)
                parts.append((reader, flat[(flat >= lo) & (flat < hi)] - lo))
        elif isinstance(source, StoreReader):
            parts.append((source, None))
        else:
            parts.append((StoreReader(source), None))
    return parts


def _size(reader: StoreReader, indices: np.ndarray | None) -> int:
    return len(reader) if indices is None else len(indices)


def _select(reader: StoreReader, indices: np.ndarray | None, positions: np.ndarray) -> np.ndarray:
    return positions if indices is None else indices[positions]


def _sample_positions(sizes: list[int], sample: int | None, seed: int) -> list[np.ndarray]:
    """Seeded subsample of ``sample`` items over the concatenation of parts (all if None)."""
    total = sum(sizes)
    if sample is None or sample >= total:
        return [np.arange(n) for n in sizes]
    chosen = np.sort(permute(np.arange(sample), total, permutation_keys(seed, 0x57A7)))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    return [chosen[(chosen >= offsets[k]) & (chosen < offsets[k + 1])] - offsets[k] for k in range(len(sizes))]


def element_reference_energies(
    energies: np.ndarray, element_count_matrix: np.ndarray, ridge: float = 1e-10
) -> np.ndarray:
    """Per-element energies e_Z minimising Σ (E - Σ_Z n_Z e_Z)², with a tiny ridge.

    Elements that never occur get exactly 0 (not NaN); NaN energies (missing labels) are ignored.
    Returns one value per column of ``element_count_matrix`` (column = atomic number Z).
    """
    counts = np.asarray(element_count_matrix, dtype=np.float64)
    energies = np.asarray(energies, dtype=np.float64).reshape(-1)
    if counts.ndim != 2 or len(counts) != len(energies):
        raise ValueError(f"{len(energies)} energies but element count matrix of shape {counts.shape}")
    keep = np.isfinite(energies)
    counts, energies = counts[keep], energies[keep]
    return solve_normal_equations(counts.T @ counts, counts.T @ energies, ridge)


def solve_normal_equations(gram: np.ndarray, rhs: np.ndarray, ridge: float = 1e-10) -> np.ndarray:
    """Solve (AᵀA + λ·s·I) x = Aᵀb with s the mean diagonal of AᵀA (unseen elements -> 0)."""
    scale = float(np.trace(gram)) / max(len(gram), 1) or 1.0
    return np.linalg.solve(gram + ridge * scale * np.eye(len(gram)), rhs)


def element_count_matrix(
    sources: Source | Sequence[Source], indices: np.ndarray | None = None, num_elements: int = NUM_ELEMENTS
) -> np.ndarray:
    """Dense [n, num_elements] element counts of the items of ``sources`` (concatenated), from
    the per-structure counts stored at ingest; ``indices`` selects items of the concatenation."""
    parts = _parts(sources)
    sizes = [_size(r, i) for r, i in parts]
    if indices is None:
        positions = [np.arange(n) for n in sizes]
    else:
        indices = np.asarray(indices, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        positions = [indices[(indices >= offsets[k]) & (indices < offsets[k + 1])] - offsets[k]
                     for k in range(len(parts))]
    blocks = [reader.element_counts(_select(reader, idx, pos), num_elements)
              for (reader, idx), pos in zip(parts, positions)]
    return np.concatenate(blocks) if blocks else np.zeros((0, num_elements))


def reference_energies(
    sources: Source | Sequence[Source], sample: int | None = None, seed: int = 0,
    num_elements: int = NUM_ELEMENTS, ridge: float = 1e-10,
) -> np.ndarray:
    """Element reference energies of (a seeded subsample of) the items of ``sources``.

    Normal equations accumulated in chunks: exact for whole stores and flat in memory.
    Structures without an energy are ignored.
    """
    parts = _parts(sources)
    positions = _sample_positions([_size(r, i) for r, i in parts], sample, seed)
    gram = np.zeros((num_elements, num_elements))
    rhs = np.zeros(num_elements)
    for (reader, idx), pos in zip(parts, positions):
        for start in range(0, len(pos), _CHUNK):
            items = _select(reader, idx, pos[start : start + _CHUNK])
            energies = np.asarray(reader.energies[items])
            keep = np.isfinite(energies)
            counts = reader.element_counts(items[keep], num_elements)
            gram += counts.T @ counts
            rhs += counts.T @ energies[keep]
    return solve_normal_equations(gram, rhs, ridge)


def average_num_neighbors(
    dataset_or_stores: Source | Sequence[Source], cutoff: float, sample: int | None = 1000, seed: int = 0
) -> float:
    """Mean number of neighbours within ``cutoff`` per atom over a seeded subsample of structures."""
    parts = _parts(dataset_or_stores)
    positions = _sample_positions([_size(r, i) for r, i in parts], sample, seed)
    edges = atoms = 0
    for (reader, idx), pos in zip(parts, positions):
        for item in _select(reader, idx, pos):
            record = reader.read(int(item))
            check_cell(record["positions"], record["cell"], record["pbc"], cutoff, f"{reader.path}: record {item}")
            i, _, _ = neighbor_list(record["positions"], record["cell"], record["pbc"], cutoff)
            edges += len(i)
            atoms += len(record["numbers"])
    if atoms == 0:
        raise ValueError("no structures to compute the average number of neighbours from")
    return edges / atoms


def force_rms(dataset_or_stores: Source | Sequence[Source], sample: int | None = None, seed: int = 0) -> float:
    """Root mean square force component, over structures that have forces.

    ``sample=None`` on whole stores uses the sums stored at ingest (exact, no record read);
    otherwise a seeded subsample of records is read.
    """
    parts = _parts(dataset_or_stores)
    if sample is None and all(idx is None for _, idx in parts):
        total = sum(float(r.metadata.get("force_sq_sum", 0.0)) for r, _ in parts)
        count = sum(int(r.metadata.get("force_components", 0)) for r, _ in parts)
    else:
        total, count = 0.0, 0
        positions = _sample_positions([_size(r, i) for r, i in parts], sample, seed)
        for (reader, idx), pos in zip(parts, positions):
            items = _select(reader, idx, pos)
            items = items[(np.asarray(reader.label_flags[items]) & LABEL_FORCES) > 0]
            for item in items:
                forces = reader.read(int(item))[FORCES]
                total += float(np.square(forces).sum())
                count += forces.size
    if count == 0:
        raise ValueError("no forces to compute a force RMS from")
    return float(np.sqrt(total / count))
