"""What a store directory holds: its files, the format constants, the label bits and the metadata record.

Layout of a store directory::

    data.mdb, lock.mdb     LMDB: key b"%010d" % i -> one encoded structure; key b"__metadata__" -> JSON
    natoms.npy             uint32 [n]      atoms per structure (the sampler reads only this)
    energy.npy             float64 [n]     total energy, NaN where missing (reference-energy fits)
    labels.npy             uint8 [n]       bit 0 energy, bit 1 forces, bit 2 stress
    elem_ptr.npy           int64 [n + 1]   CSR row pointer of per-structure element counts
    elem_z.npy, elem_n.npy uint8 / uint32  atomic number and its count in the structure

The sidecar arrays are memory-mapped on read, so opening a store of 10^8 structures costs no
anonymous memory.

Units: eV, Å, eV/Å; stress in eV/Å³ with ASE's sign (positive = tensile; virial = -stress·V).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sevenomni.core.keys import ENERGY, FORCES, STRESS

FORMAT_NAME = "sevenomni-store"
FORMAT_VERSION = 1
METADATA_KEY = b"__metadata__"
MAX_Z = 118
UNITS = {
    ENERGY: "eV",
    "positions": "Å",
    FORCES: "eV/Å",
    STRESS: "eV/Å^3, ASE sign (positive = tensile, virial = -stress * volume)",
}

LABEL_ENERGY, LABEL_FORCES, LABEL_STRESS = 1, 2, 4
SIDECARS = {
    "natoms": np.uint32,
    ENERGY: np.float64,
    "labels": np.uint8,
    "elem_ptr": np.int64,
    "elem_z": np.uint8,
    "elem_n": np.uint32,
}


class _AtomCounts(BaseModel):
    total: int = Field(ge=0)
    min: int = Field(ge=0)
    max: int = Field(ge=0)
    mean: float = Field(ge=0, allow_inf_nan=False)


class StoreMetadata(BaseModel):
    """What a reader relies on in a store's metadata record (other keys are kept as they are)."""

    model_config = ConfigDict(extra="allow")
    count: int = Field(ge=0)
    sources: list[str]
    num_atoms: _AtomCounts
    elements: dict[str, int]
    labels: dict[str, int]
    units: dict[str, str]


def record_key(index: int) -> bytes:
    return b"%010d" % index


def is_store(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "data.mdb").is_file() and (path / "natoms.npy").is_file()
