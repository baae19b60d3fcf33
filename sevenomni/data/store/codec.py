"""One structure record: :class:`Record`, its encoding for the store and its checked decoding.

One record is a fixed little-endian header followed by raw arrays (no pickle)::

    magic "S7", version, flags (energy, forces, stress, charge, spin, pbc x/y/z), natoms,
    source id, source index, energy, charge, spin, len(config_type), len(name), crc32(header before
    the checksum + payload; version 1 records, written before version 2, covered the payload only)
    payload: positions f64[N,3], cell f64[3,3], forces f64[N,3]?, stress f64[3,3]?,
             numbers u8[N], config_type utf-8, name utf-8
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from sevenomni.core.keys import ENERGY, FORCES, STRESS
from sevenomni.data.store.errors import CorruptRecordError
from sevenomni.data.store.layout import LABEL_ENERGY, LABEL_FORCES, LABEL_STRESS, MAX_Z

_MAGIC = b"S7"
_RECORD_VERSION = 2
_READABLE_RECORD_VERSIONS = (1, 2)
HEADER = struct.Struct("<2sBBIIQdddHHI4x")
SOURCE_ID = struct.Struct("<I")  # at byte offset 8 of the header
_CHECKSUM = struct.Struct("<I")  # at byte offset 48 of the header
_CHECKSUM_OFFSET = 48
_HAS_ENERGY, _HAS_FORCES, _HAS_STRESS, _HAS_CHARGE, _HAS_SPIN = 1, 2, 4, 8, 16
_PBC_SHIFT = 5


@dataclass
class Record:
    """One validated structure with optional labels (see ``readers.common.validate_record``)."""

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    charge: float | None = None
    spin: float | None = None
    source: str = ""
    index: int = 0
    config_type: str | None = None
    name: str | None = None
    # Where each label was found (e.g. {"energy": "info:REF_energy"}); counted in the metadata
    # ("label_origin") and summarised by StoreReader.label_sources.
    origin: dict[str, str] | None = field(default=None, repr=False)


def encode_record(record: Record, source_id: int) -> bytes:
    n = len(record.numbers)
    flags = 0
    parts = [
        np.ascontiguousarray(record.positions, dtype="<f8").tobytes(),
        np.ascontiguousarray(record.cell, dtype="<f8").tobytes(),
    ]
    if record.energy is not None:
        flags |= _HAS_ENERGY
    if record.forces is not None:
        flags |= _HAS_FORCES
        parts.append(np.ascontiguousarray(record.forces, dtype="<f8").tobytes())
    if record.stress is not None:
        flags |= _HAS_STRESS
        parts.append(np.ascontiguousarray(record.stress, dtype="<f8").tobytes())
    if record.charge is not None:
        flags |= _HAS_CHARGE
    if record.spin is not None:
        flags |= _HAS_SPIN
    for axis, periodic in enumerate(np.asarray(record.pbc, dtype=bool)):
        flags |= int(periodic) << (_PBC_SHIFT + axis)
    config = (record.config_type or "").encode()[:65535]
    name = (record.name or "").encode()[:65535]
    parts += [np.asarray(record.numbers, dtype=np.uint8).tobytes(), config, name]
    payload = b"".join(parts)
    header = HEADER.pack(
        _MAGIC,
        _RECORD_VERSION,
        flags,
        n,
        source_id,
        record.index,
        float(record.energy) if record.energy is not None else 0.0,
        float(record.charge) if record.charge is not None else 0.0,
        float(record.spin) if record.spin is not None else 0.0,
        len(config),
        len(name),
        0,
    )
    return sealed(header + payload)


def _checksum(buffer: bytes, version: int) -> int:
    """CRC-32 of a record: its header up to the checksum and its payload (version 1: the payload)."""
    view = memoryview(buffer)
    return zlib.crc32(view[HEADER.size :], 0 if version == 1 else zlib.crc32(view[:_CHECKSUM_OFFSET]))


def sealed(data: bytes) -> bytes:
    """An encoded record with its checksum (re)computed, e.g. after its source id was set."""
    return data[:_CHECKSUM_OFFSET] + _CHECKSUM.pack(_checksum(data, _RECORD_VERSION)) + data[_CHECKSUM_OFFSET + 4 :]


def decode_record(buffer: bytes, where: str) -> dict[str, Any]:
    """Decode and check one record: header, lengths, checksum, element range, finiteness."""
    if len(buffer) < HEADER.size:
        raise CorruptRecordError(f"{where}: record is truncated ({len(buffer)} bytes)")
    magic, version, flags, n, source_id, index, energy, charge, spin, n_config, n_name, crc = (
        HEADER.unpack_from(buffer)
    )
    if magic != _MAGIC or version not in _READABLE_RECORD_VERSIONS:
        raise CorruptRecordError(f"{where}: not a sevenomni record (magic {magic!r}, version {version})")
    n_floats = 3 * n + 9 + (3 * n if flags & _HAS_FORCES else 0) + (9 if flags & _HAS_STRESS else 0)
    expected = HEADER.size + 8 * n_floats + n + n_config + n_name
    if len(buffer) != expected:
        raise CorruptRecordError(f"{where}: record has {len(buffer)} bytes, its header says {expected}")
    if _checksum(buffer, version) != crc:
        raise CorruptRecordError(f"{where}: checksum mismatch (corrupted record)")
    scalars = {ENERGY: (_HAS_ENERGY, energy), "charge": (_HAS_CHARGE, charge), "spin": (_HAS_SPIN, spin)}
    bad = [name for name, (flag, value) in scalars.items() if flags & flag and not np.isfinite(value)]
    if bad:
        raise CorruptRecordError(f"{where}: non-finite {', '.join(bad)} in a stored record")
    floats = np.frombuffer(buffer, dtype="<f8", count=n_floats, offset=HEADER.size)
    out: dict[str, Any] = {
        "positions": floats[: 3 * n].reshape(n, 3).copy(),
        "cell": floats[3 * n : 3 * n + 9].reshape(3, 3).copy(),
        "pbc": np.array([bool(flags >> (_PBC_SHIFT + a) & 1) for a in range(3)]),
    }
    cursor = 3 * n + 9
    if flags & _HAS_FORCES:
        out[FORCES] = floats[cursor : cursor + 3 * n].reshape(n, 3).copy()
        cursor += 3 * n
    if flags & _HAS_STRESS:
        out[STRESS] = floats[cursor : cursor + 9].reshape(3, 3).copy()
    offset = HEADER.size + 8 * n_floats
    numbers = np.frombuffer(buffer, dtype=np.uint8, count=n, offset=offset).astype(np.int64)
    if n == 0 or numbers.min() < 1 or numbers.max() > MAX_Z:
        raise CorruptRecordError(f"{where}: atomic numbers out of range 1..{MAX_Z}")
    if not np.isfinite(floats).all():
        raise CorruptRecordError(f"{where}: non-finite values in a stored record")
    out["numbers"] = numbers
    if flags & _HAS_ENERGY:
        out[ENERGY] = np.float64(energy)
    if flags & _HAS_CHARGE:
        out["charge"] = np.float64(charge)
    if flags & _HAS_SPIN:
        out["spin"] = np.float64(spin)
    offset += n
    try:
        out["config_type"] = bytes(buffer[offset : offset + n_config]).decode() or None
        out["name"] = bytes(buffer[offset + n_config : offset + n_config + n_name]).decode() or None
    except UnicodeDecodeError:
        raise CorruptRecordError(f"{where}: its config_type or name is not UTF-8 (corrupted record)") from None
    out["source_id"] = source_id
    out["index"] = index
    return out


class EncodedRecord(NamedTuple):
    """A record encoded for the store plus what the writer's sidecars and metadata need.

    Cheap to pickle: parallel ingest workers send these to the single writer process.
    """

    data: bytes  # encoded with source id 0; the writer patches in the real id
    source: str
    natoms: int
    energy: float  # NaN if missing
    labels: int  # LABEL_* bits
    has_charge: bool
    has_spin: bool
    z: list[int]
    counts: list[int]
    force_sq_sum: float
    origin: dict[str, str] | None


def prepare_record(record: Record) -> EncodedRecord:
    histogram = np.bincount(np.asarray(record.numbers, dtype=np.int64))
    z = np.flatnonzero(histogram).tolist()
    labels = (
        (LABEL_ENERGY if record.energy is not None else 0)
        | (LABEL_FORCES if record.forces is not None else 0)
        | (LABEL_STRESS if record.stress is not None else 0)
    )
    return EncodedRecord(
        data=encode_record(record, 0), source=record.source, natoms=len(record.numbers),
        energy=float(record.energy) if record.energy is not None else float("nan"), labels=labels,
        has_charge=record.charge is not None, has_spin=record.spin is not None, z=z,
        counts=histogram[z].tolist(),
        force_sq_sum=float(np.square(record.forces).sum()) if record.forces is not None else 0.0,
        origin=record.origin,
    )
