"""Isolated-atom frames: one atom alone, whose energy is its element's energy reference (E0).

A frame is an isolated atom when it holds exactly one atom and either its ``config_type`` is
``IsolatedAtom`` (any case) or it has no periodic direction. Such frames are never training or
validation structures: without neighbours they carry no force information and would pull the
fitted energy shifts (see ``DatabaseSpec.energy_references``). Only one-atom records are
opened to decide, so finding them costs nothing on stores of large structures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from ase.data import chemical_symbols

from sevenomni.core.keys import ENERGY
from sevenomni.data.store import StoreReader

ISOLATED_ATOM = "isolatedatom"
TOLERANCE = 1e-3  # eV: two frames of one element further apart than this disagree


@dataclass
class IsolatedAtoms:
    """Where the isolated-atom frames of some stores are (indices into their concatenation) and,
    per element, the energy they give (elements whose frames have no energy are absent)."""

    indices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    energies: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indices)


def is_isolated_atom(record: dict) -> bool:
    """One atom, tagged ``config_type: IsolatedAtom`` (any case) or without a periodic cell."""
    if len(record["numbers"]) != 1:
        return False
    tagged = (record.get("config_type") or "").replace("_", "").lower() == ISOLATED_ATOM
    return tagged or not bool(np.any(record["pbc"]))


def find_isolated_atoms(readers: Sequence[StoreReader], where: str) -> IsolatedAtoms:
    """The isolated-atom frames of ``readers`` (concatenated in order); ValueError when two frames
    of one element give different energies (``where`` names the database)."""
    indices, found = [], {}
    offset = 0
    for reader in readers:
        for local in np.flatnonzero(np.asarray(reader.num_atoms) == 1):
            record = reader.read(int(local))
            if not is_isolated_atom(record):
                continue
            indices.append(offset + int(local))
            if ENERGY in record:
                symbol = chemical_symbols[int(record["numbers"][0])]
                found.setdefault(symbol, []).append(float(record[ENERGY]))
        offset += len(reader)
    energies = {}
    for symbol, values in found.items():
        if max(values) - min(values) > TOLERANCE:
            raise ValueError(
                f"{where}: its isolated-atom frames of {symbol} disagree ({min(values):.6f} vs {max(values):.6f} eV); "
                "keep one per element"
            )
        energies[symbol] = float(np.mean(values))
    return IsolatedAtoms(np.asarray(indices, dtype=np.int64), energies)
