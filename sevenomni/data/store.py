"""The project's structure store: one LMDB directory, written atomically, read lazily.

Layout of a store directory::

    data.mdb, lock.mdb     LMDB: key b"%010d" % i -> one encoded structure; key b"__metadata__" -> JSON
    natoms.npy             uint32 [n]      atoms per structure (the sampler reads only this)
    energy.npy             float64 [n]     total energy, NaN where missing (reference-energy fits)
    labels.npy             uint8 [n]       bit 0 energy, bit 1 forces, bit 2 stress
    elem_ptr.npy           int64 [n + 1]   CSR row pointer of per-structure element counts
    elem_z.npy, elem_n.npy uint8 / uint32  atomic number and its count in the structure

The sidecar arrays are memory-mapped on read, so opening a store of 10^8 structures costs no
anonymous memory. A store is written under ``<out>.partial-*`` (its writer holding a lock there, so
that a later writer removes the directories of killed ones) and renamed into place only when
complete; a reader refuses a directory without the metadata record (``"complete": true``), and
damaged files (a truncated or foreign ``data.mdb``, a sidecar of the wrong length) with a
:class:`StoreError` naming the file, before anything is mapped. It compares the sidecars with a
sample of records when it opens a store, and with all of them in :meth:`StoreReader.verify`.

One record is a fixed little-endian header followed by raw arrays (no pickle)::

    magic "S7", version, flags (energy, forces, stress, charge, spin, pbc x/y/z), natoms,
    source id, source index, energy, charge, spin, len(config_type), len(name), crc32(header before
    the checksum + payload; version 1 records, written before version 2, covered the payload only)
    payload: positions f64[N,3], cell f64[3,3], forces f64[N,3]?, stress f64[3,3]?,
             numbers u8[N], config_type utf-8, name utf-8

Units: eV, Å, eV/Å; stress in eV/Å³ with ASE's sign (positive = tensile; virial = -stress·V).
"""

from __future__ import annotations

import array
import errno
import fcntl
import glob
import json
import os
import shutil
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import lmdb
import numpy as np
from ase.data import chemical_symbols
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sevenomni.core.base import validation_problems
from sevenomni.core.files import describe_os_error, new_sibling
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

_MAGIC = b"S7"
_RECORD_VERSION = 2
_READABLE_RECORD_VERSIONS = (1, 2)
_HEADER = struct.Struct("<2sBBIIQdddHHI4x")
_SOURCE_ID = struct.Struct("<I")  # at byte offset 8 of the header
_CHECKSUM = struct.Struct("<I")  # at byte offset 48 of the header
_CHECKSUM_OFFSET = 48
_HAS_ENERGY, _HAS_FORCES, _HAS_STRESS, _HAS_CHARGE, _HAS_SPIN = 1, 2, 4, 8, 16
_PBC_SHIFT = 5
LABEL_ENERGY, LABEL_FORCES, LABEL_STRESS = 1, 2, 4
_SIDECARS = {
    "natoms": np.uint32,
    ENERGY: np.float64,
    "labels": np.uint8,
    "elem_ptr": np.int64,
    "elem_z": np.uint8,
    "elem_n": np.uint32,
}


class StoreError(ValueError):
    """A store is missing, incomplete, damaged, of another format, or cannot be written."""


class CorruptRecordError(StoreError):
    """A stored record fails its checks on read (names the store and the index)."""


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


# Records compared with the sidecar arrays whenever a store is opened (the first, the last and
# some in between); ``StoreReader.verify`` compares every one.
SIDECAR_SAMPLE = 8


def record_key(index: int) -> bytes:
    return b"%010d" % index


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
    header = _HEADER.pack(
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
    return zlib.crc32(view[_HEADER.size :], 0 if version == 1 else zlib.crc32(view[:_CHECKSUM_OFFSET]))


def sealed(data: bytes) -> bytes:
    """An encoded record with its checksum (re)computed, e.g. after its source id was set."""
    return data[:_CHECKSUM_OFFSET] + _CHECKSUM.pack(_checksum(data, _RECORD_VERSION)) + data[_CHECKSUM_OFFSET + 4 :]


def decode_record(buffer: bytes, where: str) -> dict[str, Any]:
    """Decode and check one record: header, lengths, checksum, element range, finiteness."""
    if len(buffer) < _HEADER.size:
        raise CorruptRecordError(f"{where}: record is truncated ({len(buffer)} bytes)")
    magic, version, flags, n, source_id, index, energy, charge, spin, n_config, n_name, crc = (
        _HEADER.unpack_from(buffer)
    )
    if magic != _MAGIC or version not in _READABLE_RECORD_VERSIONS:
        raise CorruptRecordError(f"{where}: not a sevenomni record (magic {magic!r}, version {version})")
    n_floats = 3 * n + 9 + (3 * n if flags & _HAS_FORCES else 0) + (9 if flags & _HAS_STRESS else 0)
    expected = _HEADER.size + 8 * n_floats + n + n_config + n_name
    if len(buffer) != expected:
        raise CorruptRecordError(f"{where}: record has {len(buffer)} bytes, its header says {expected}")
    if _checksum(buffer, version) != crc:
        raise CorruptRecordError(f"{where}: checksum mismatch (corrupted record)")
    scalars = {ENERGY: (_HAS_ENERGY, energy), "charge": (_HAS_CHARGE, charge), "spin": (_HAS_SPIN, spin)}
    bad = [name for name, (flag, value) in scalars.items() if flags & flag and not np.isfinite(value)]
    if bad:
        raise CorruptRecordError(f"{where}: non-finite {', '.join(bad)} in a stored record")
    floats = np.frombuffer(buffer, dtype="<f8", count=n_floats, offset=_HEADER.size)
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
    offset = _HEADER.size + 8 * n_floats
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


class _Spool:
    """Append-only raw array file, turned into a ``.npy`` at commit (keeps writer memory flat)."""

    _TYPECODES = {np.dtype(np.uint8): "B", np.dtype(np.uint32): "I", np.dtype(np.int64): "q",
                  np.dtype(np.float64): "d"}

    def __init__(self, path: Path, dtype: type, buffer_size: int = 1 << 16) -> None:
        self.path, self.dtype, self.buffer_size = path, np.dtype(dtype), buffer_size
        self.buffer = array.array(self._TYPECODES[self.dtype])
        assert self.buffer.itemsize == self.dtype.itemsize
        self.length = 0
        self.handle = open(path, "wb")  # noqa: SIM115 - closed in finish()/close()

    def append(self, value: float) -> None:
        self.buffer.append(value)
        if len(self.buffer) >= self.buffer_size:
            self.flush()

    def extend(self, values: list) -> None:
        self.buffer.extend(values)
        if len(self.buffer) >= self.buffer_size:
            self.flush()

    def flush(self) -> None:
        self.length += len(self.buffer)
        self.handle.write(self.buffer.tobytes())
        del self.buffer[:]

    def finish(self, target: Path, chunk: int = 1 << 22) -> None:
        self.flush()
        self.handle.close()
        out = np.lib.format.open_memmap(target, mode="w+", dtype=self.dtype, shape=(self.length,))
        if self.length:
            raw = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.length,))
            for start in range(0, self.length, chunk):
                out[start : start + chunk] = raw[start : start + chunk]
            del raw
        out.flush()
        del out
        self.path.unlink()

    def close(self) -> None:
        if not self.handle.closed:
            self.handle.close()


class StoreWriter:
    """Stream records into a new store; nothing is visible at ``out`` until :meth:`commit`.

    Use as a context manager: leaving it by an exception removes the partial directory.
    """

    def __init__(
        self, out: str | os.PathLike, *, overwrite: bool = False, map_size: int = 1 << 40,
        commit_every: int = 4096,
    ) -> None:
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise StoreError(f"{self.out} already exists (pass overwrite=True / --overwrite to replace it)")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(self.out)
        self.tmp = new_sibling(self.out, PARTIAL, Path.mkdir)  # dirs 0777 & ~umask
        self.lock = _hold_writer_lock(self.tmp)
        self.overwrite = overwrite
        self.commit_every = commit_every
        try:
            self.env = lmdb.open(
                str(self.tmp), map_size=map_size, subdir=True, sync=False, metasync=False,
                meminit=False, map_async=True, mode=0o666,  # files 0666 & ~umask, as open() makes them
            )
        except lmdb.Error as error:
            shutil.rmtree(self.tmp, ignore_errors=True)
            os.close(self.lock)
            raise self._write_failed(error) from None
        self.txn = self.env.begin(write=True)
        self.count = 0
        self.sources: dict[str, int] = {}
        self.elements: Counter[int] = Counter()
        self.label_counts: Counter[str] = Counter()
        self.origins: dict[str, Counter[str]] = {}
        self.force_sq_sum = 0.0
        self.force_components = 0
        self.natoms_total = 0
        self.natoms_min: int | None = None
        self.natoms_max = 0
        self.nnz = 0
        self.spools = {name: _Spool(self.tmp / f"{name}.raw", dtype) for name, dtype in _SIDECARS.items()}
        self.spools["elem_ptr"].append(0)
        self.closed = False

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.closed:
            self.abort()

    def _write_failed(self, error: Exception) -> StoreError:
        """The store cannot be written (permission, disk full, an LMDB error): a StoreError naming it."""
        try:
            full = shutil.disk_usage(self.out.parent).free < _DISK_FULL_BYTES
        except OSError:
            full = False
        full = full or getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
        detail = describe_os_error(error) if isinstance(error, OSError) else f"{type(error).__name__}: {error}"
        cause = f"the disk is full ({detail})" if full else detail
        return StoreError(f"{self.out}: cannot write the store: {cause}; nothing was written there")

    def add(self, record: Record | EncodedRecord) -> int:
        """Append one (already validated) record; returns its index in the store."""
        try:
            return self._add(record)
        except (lmdb.Error, OSError) as error:
            raise self._write_failed(error) from None

    def _add(self, record: Record | EncodedRecord) -> int:
        item = record if isinstance(record, EncodedRecord) else prepare_record(record)
        source_id = self.sources.setdefault(item.source, len(self.sources))
        data = item.data if source_id == 0 else sealed(item.data[:8] + _SOURCE_ID.pack(source_id) + item.data[12:])
        self.txn.put(record_key(self.count), data, append=True)
        for zi, ci in zip(item.z, item.counts):
            self.elements[zi] += ci
        self.nnz += len(item.z)
        n = item.natoms
        for label, bit in ((ENERGY, LABEL_ENERGY), (FORCES, LABEL_FORCES), (STRESS, LABEL_STRESS)):
            if item.labels & bit:
                self.label_counts[label] += 1
        if item.labels & LABEL_FORCES:
            self.force_sq_sum += item.force_sq_sum
            self.force_components += 3 * n
        self.label_counts["charge"] += item.has_charge
        self.label_counts["spin"] += item.has_spin
        for label, origin in (item.origin or {}).items():
            self.origins.setdefault(label, Counter())[origin] += 1
        spools = self.spools
        spools["natoms"].append(n)
        spools[ENERGY].append(item.energy)
        spools["labels"].append(item.labels)
        spools["elem_ptr"].append(self.nnz)
        spools["elem_z"].extend(item.z)
        spools["elem_n"].extend(item.counts)
        self.natoms_total += n
        self.natoms_min = n if self.natoms_min is None else min(self.natoms_min, n)
        self.natoms_max = max(self.natoms_max, n)
        self.count += 1
        if self.count % self.commit_every == 0:
            self.txn.commit()
            self.txn = self.env.begin(write=True)
        return self.count - 1

    def metadata(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        force_rms = (
            float(np.sqrt(self.force_sq_sum / self.force_components)) if self.force_components else None
        )
        meta: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "complete": True,
            "count": self.count,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "units": UNITS,
            "num_atoms": {
                "total": self.natoms_total,
                "min": self.natoms_min or 0,
                "max": self.natoms_max,
                "mean": self.natoms_total / self.count if self.count else 0.0,
            },
            "elements": {chemical_symbols[z]: int(c) for z, c in sorted(self.elements.items())},
            "labels": {k: int(self.label_counts.get(k, 0)) for k in (ENERGY, FORCES, STRESS, "charge", "spin")},
            "label_origin": {k: dict(v) for k, v in sorted(self.origins.items())},
            "force_sq_sum": self.force_sq_sum,
            "force_components": self.force_components,
            "force_rms": force_rms,
            "sources": list(self.sources),
            "arrays": {name: f"{name}.npy" for name in _SIDECARS},
        }
        meta.update(extra or {})
        return meta

    def commit(self, extra_metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write metadata and sidecars, sync, and move the finished store to ``out``."""
        try:
            meta = self.metadata(extra_metadata)
            self.txn.put(METADATA_KEY, json.dumps(meta).encode())
            self.txn.commit()
            self.env.sync(True)
            self.env.close()
            for name, spool in self.spools.items():
                spool.finish(self.tmp / f"{name}.npy")
            (self.tmp / _WRITER_LOCK).unlink()  # still held: a cleaner finds no lock and keeps the directory
            _fsync_dir(self.tmp)
            if self.out.exists():
                if not self.overwrite:
                    raise StoreError(f"{self.out} appeared while writing; not replacing it")
                old = self.out.with_name(self.out.name + f".old-{os.getpid()}")
                os.rename(self.out, old)
                os.rename(self.tmp, self.out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                try:
                    os.rename(self.tmp, self.out)
                except OSError as error:  # another writer finished the same store between the check and here
                    if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
                    raise StoreError(f"{self.out} appeared while writing; not replacing it") from None
            _fsync_dir(self.out.parent)
        except (lmdb.Error, OSError) as error:
            self.abort()
            raise self._write_failed(error) from None
        except BaseException:
            self.abort()
            raise
        self.closed = True
        os.close(self.lock)
        return meta

    def abort(self) -> None:
        """Drop everything written so far."""
        if self.closed:
            return
        self.closed = True
        for spool in self.spools.values():
            spool.close()
        try:
            self.txn.abort()
        except lmdb.Error:
            pass
        try:
            self.env.close()
        except lmdb.Error:
            pass
        shutil.rmtree(self.tmp, ignore_errors=True)
        os.close(self.lock)


# A store is written in ``<out>.partial-<token>``, whose writer holds an exclusive lock on the file
# _WRITER_LOCK in it until the store is complete. A writer killed (SIGKILL, power loss) leaves the
# directory with the lock free: the next writer of the same store removes it.
PARTIAL = "{name}.partial-{token}"
_WRITER_LOCK = ".writer.lock"
_DISK_FULL_BYTES = 1 << 20  # less free space than this: a failed write is put down to a full disk


def _hold_writer_lock(directory: Path) -> int:
    descriptor = os.open(directory / _WRITER_LOCK, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    return descriptor


def remove_stale_partials(out: Path) -> list[Path]:
    """Remove the partial directories of ``out`` whose writer is gone (its lock is free); returns them.

    A directory without a lock file (its writer just created it, or an older sevenomni wrote it) is kept.
    """
    removed = []
    for candidate in sorted(out.parent.glob(glob.escape(out.name) + ".partial-*")):
        try:
            descriptor = os.open(candidate / _WRITER_LOCK, os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its writer is at work
            os.close(descriptor)
            continue
        shutil.rmtree(candidate, ignore_errors=True)
        os.close(descriptor)
        removed.append(candidate)
    return removed


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_store(
    records: Iterable[Record], out_path: str | os.PathLike, *, overwrite: bool = False,
    extra_metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write an iterable of :class:`Record` to a new store at ``out_path``; returns its metadata."""
    with StoreWriter(out_path, overwrite=overwrite) as writer:
        for record in records:
            writer.add(record)
        return writer.commit(extra_metadata)


# LMDB's two meta pages (pages 0 and 1): page header flags at byte 10; from byte 16 the magic,
# format version, ..., page size (the free-list record's md_pad) at 40, last used page and
# transaction id at 136 (64-bit builds).
_LMDB_MAGIC, _LMDB_VERSION, _LMDB_P_META = 0xBEEFC0DE, 1, 0x08
_LMDB_FLAGS = struct.Struct("<H")
_LMDB_META = struct.Struct("<II16xI92xQQ")
_LMDB_META_SIZE = 16 + _LMDB_META.size


def check_lmdb_file(file: Path) -> None:
    """Refuse an LMDB data file that is not LMDB or is shorter than its newest meta page says.

    LMDB maps the file and trusts it: touching a page past the end of a truncated file kills the
    process with SIGBUS. So the size is checked against the meta pages before LMDB opens it.
    """
    size = file.stat().st_size
    metas = []
    with open(file, "rb") as handle:
        for page in range(2):
            handle.seek(page * metas[0][2] if metas else 0)
            raw = handle.read(_LMDB_META_SIZE)
            if len(raw) < _LMDB_META_SIZE:
                raise StoreError(f"{file}: not an LMDB file ({size} bytes, too short for its header)")
            (flags,) = _LMDB_FLAGS.unpack_from(raw, 10)
            magic, version, page_size, last_page, txn_id = _LMDB_META.unpack_from(raw, 16)
            if (magic != _LMDB_MAGIC or version != _LMDB_VERSION or not flags & _LMDB_P_META
                    or page_size < 512 or page_size & (page_size - 1)):
                raise StoreError(f"{file}: not an LMDB file (meta page {page} is damaged)")
            metas.append((txn_id, last_page, page_size))
    _, last_page, page_size = max(metas)
    needed = (last_page + 1) * page_size
    if size < needed:
        raise StoreError(f"{file}: truncated: {size:,} bytes, its LMDB header says {needed:,} "
                         "(copy the store again or re-ingest it)")


def describe_label_origins(origins: dict[str, dict[str, int]]) -> dict[str, str]:
    """Label -> where it came from, from per-origin counts: ``"info:REF_energy"`` when every
    structure's label came from one place, else ``"info:REF_energy (6), calculator:energy (2)"``."""
    out = {}
    for label, counts in origins.items():
        ranked = sorted(counts.items(), key=lambda item: -item[1])  # ties: in order of first use
        out[label] = ranked[0][0] if len(ranked) == 1 else ", ".join(f"{where} ({n:,})" for where, n in ranked)
    return out


def is_store(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "data.mdb").is_file() and (path / "natoms.npy").is_file()


class StoreReader:
    """Read-only, lazy access to a store; safe to use after ``fork`` (reopens per process).

    ``num_atoms`` and the other sidecars are read-only memory maps.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise StoreError(f"{self.path}: no such store directory")
        if not (self.path / "data.mdb").is_file():
            raise StoreError(f"{self.path}: not a sevenomni store (no data.mdb)")
        self._env: lmdb.Environment | None = None
        self._txn: lmdb.Transaction | None = None
        self._env_key: tuple[int, int] | None = None
        self._pid = os.getpid()
        try:
            raw = self._transaction().get(METADATA_KEY)
        except lmdb.Error as error:
            raise StoreError(f"{self.path / 'data.mdb'}: cannot read the metadata record: {error}") from None
        if raw is None:
            raise StoreError(f"{self.path}: store is incomplete (no metadata record; was the ingest interrupted?)")
        try:
            self.metadata: dict[str, Any] = json.loads(raw)
        except ValueError:
            raise StoreError(f"{self.path / 'data.mdb'}: the metadata record is damaged (not JSON)") from None
        if self.metadata.get("format") != FORMAT_NAME or not self.metadata.get("complete"):
            raise StoreError(f"{self.path}: not a complete {FORMAT_NAME}")
        if self.metadata.get("version") != FORMAT_VERSION:
            raise StoreError(
                f"{self.path}: store format version {self.metadata.get('version')}, "
                f"this sevenomni reads version {FORMAT_VERSION}"
            )
        try:
            StoreMetadata(**self.metadata)
        except ValidationError as error:
            raise StoreError(
                f"{self.path / 'data.mdb'}: damaged metadata record ({'; '.join(validation_problems(error))}); "
                "re-ingest the store"
            ) from None
        self._count = int(self.metadata["count"])
        self._arrays = self._open_sidecars()
        sample = np.linspace(0, self._count - 1, num=min(SIDECAR_SAMPLE, self._count)).round().astype(np.int64)
        self._compare_sidecars(sample, skip_damaged=True)

    def _open_sidecars(self) -> dict[str, np.ndarray]:
        """Memory-map the sidecar arrays, checking each one's type and length first."""
        arrays: dict[str, np.ndarray] = {}
        lengths = {"natoms": self._count, ENERGY: self._count, "labels": self._count, "elem_ptr": self._count + 1}
        for name, dtype in _SIDECARS.items():
            file = self.path / f"{name}.npy"
            if not file.is_file():
                raise StoreError(f"{self.path}: store is incomplete (missing {file.name})")
            try:
                array = np.load(file, mmap_mode="r")
            except Exception as error:  # noqa: BLE001 - whatever a damaged .npy header makes numpy raise
                raise StoreError(f"{file}: damaged sidecar array ({error}); re-ingest the store") from None
            if array.dtype != dtype or array.ndim != 1 or len(array) != lengths[name]:
                raise StoreError(f"{file}: damaged sidecar array ({array.dtype} {array.shape}, "
                                 f"expected {np.dtype(dtype)} ({lengths[name]},)); re-ingest the store")
            if name == "elem_ptr":
                lengths["elem_z"] = lengths["elem_n"] = int(array[-1])
            arrays[name] = array
        return arrays

    def _compare_sidecars(self, indices: Iterable[int], skip_damaged: bool = False) -> None:
        """StoreError naming the sidecar that disagrees with one of these records (a damaged record:
        CorruptRecordError, or skipped with ``skip_damaged``: reading it will name it)."""
        ptr, z, counts = self._arrays["elem_ptr"], self._arrays["elem_z"], self._arrays["elem_n"]
        for index in indices:
            try:
                record = self.read(int(index))
            except CorruptRecordError:
                if skip_damaged:
                    continue
                raise
            numbers = record["numbers"]
            histogram = np.bincount(numbers)
            elements = np.flatnonzero(histogram)
            labels = sum(bit for label, bit in ((ENERGY, LABEL_ENERGY), (FORCES, LABEL_FORCES), (STRESS, LABEL_STRESS))
                         if label in record)
            energy = float(record.get(ENERGY, np.nan))
            start, stop = int(ptr[index]), int(ptr[index + 1])
            checks = {
                "natoms": int(self.num_atoms[index]) == len(numbers),
                ENERGY: np.array_equal(self.energies[index], energy, equal_nan=True),
                "labels": int(self.label_flags[index]) == labels,
                "elem_ptr": 0 <= start <= stop <= len(z) and stop - start == len(elements),
            }
            if checks["elem_ptr"]:
                checks["elem_z"] = np.array_equal(z[start:stop], elements)
                checks["elem_n"] = np.array_equal(counts[start:stop], histogram[elements])
            wrong = [name for name, agrees in checks.items() if not agrees]
            if wrong:
                raise StoreError(
                    f"{self.path / (wrong[0] + '.npy')}: disagrees with record {index} of the store "
                    f"({', '.join(wrong)}); the store is damaged: re-ingest it"
                )

    def verify(self) -> None:
        """Compare every record with the sidecar arrays and the metadata; StoreError at the first
        disagreement (``sevenomni data verify``). Opening a store compares only a sample."""
        self._compare_sidecars(range(self._count))
        try:
            extra = self._transaction().get(record_key(self._count))
        except lmdb.Error as error:
            raise StoreError(f"{self.path / 'data.mdb'}: {error}") from None
        if extra is not None:
            raise StoreError(f"{self.path / 'data.mdb'}: holds more records than its metadata's count {self._count}")
        atoms = self.metadata["num_atoms"]
        natoms = np.asarray(self.num_atoms, dtype=np.int64)
        found = {"total": int(natoms.sum()), "min": int(natoms.min()) if len(natoms) else 0,
                 "max": int(natoms.max(initial=0))}
        wrong = [key for key, value in found.items() if atoms[key] != value]
        if wrong:
            raise StoreError(f"{self.path / 'data.mdb'}: its metadata's atom counts ({', '.join(wrong)}) disagree "
                             "with the records; re-ingest the store")

    # -- lifecycle ---------------------------------------------------------------------------

    def _transaction(self) -> lmdb.Transaction:
        if self._txn is None or self._pid != os.getpid():
            if self._pid != os.getpid():
                _ENVIRONMENTS.after_fork()  # closes the inherited environments first
                self._env = self._txn = None
            self._env, self._env_key = _ENVIRONMENTS.acquire(self.path)
            self._txn = self._env.begin(write=False, buffers=False)
            self._pid = os.getpid()
        return self._txn

    def close(self) -> None:
        """Release this reader's LMDB handles (it reopens on the next read)."""
        if self._txn is not None and self._pid == os.getpid():
            self._txn.abort()
            _ENVIRONMENTS.release(self._env_key)
        self._env = self._txn = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- contents ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    @property
    def num_atoms(self) -> np.ndarray:
        """Atoms per structure, uint32 [n] (memory-mapped)."""
        return self._arrays["natoms"]

    @property
    def energies(self) -> np.ndarray:
        """Total energy per structure, float64 [n], NaN where missing (memory-mapped)."""
        return self._arrays[ENERGY]

    @property
    def label_flags(self) -> np.ndarray:
        """Bit mask per structure: 1 energy, 2 forces, 4 stress (memory-mapped)."""
        return self._arrays["labels"]

    @property
    def sources(self) -> list[str]:
        return self.metadata["sources"]

    @property
    def label_origins(self) -> dict[str, dict[str, int]]:
        """Per label, how many structures took it from each place (``{"energy": {"info:REF_energy": 6}}``)."""
        return self.metadata.get("label_origin", {})

    @property
    def label_sources(self) -> dict[str, str]:
        """Where each stored label came from, e.g. ``{"energy": "info:REF_energy", "forces":
        "arrays:REF_forces", "stress": "calculator:stress"}`` (several places: each with its count;
        see :func:`describe_label_origins`). Labels the store does not hold are absent."""
        return describe_label_origins(self.label_origins)

    def element_counts(self, indices: np.ndarray | None = None, num_elements: int = MAX_Z + 1) -> np.ndarray:
        """Dense per-structure element counts [len(indices), num_elements] (column = Z)."""
        ptr, z, n = self._arrays["elem_ptr"], self._arrays["elem_z"], self._arrays["elem_n"]
        if indices is None:
            indices = np.arange(self._count)
        indices = np.asarray(indices, dtype=np.int64)
        starts, stops = ptr[indices], ptr[indices + 1]
        lengths = stops - starts
        rows = np.repeat(np.arange(len(indices)), lengths)
        flat = (np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())).astype(np.int64)
        out = np.zeros((len(indices), num_elements), dtype=np.float64)
        np.add.at(out, (rows, z[flat].astype(np.int64)), n[flat])
        return out

    def config_types(self) -> list[str | None]:
        """Every record's ``config_type`` (None where untagged), read from the headers alone."""
        types = []
        transaction = self._transaction()
        for index in range(self._count):
            where = f"{self.path}: record {index}"
            try:
                buffer = transaction.get(record_key(index))
            except lmdb.Error as error:
                raise CorruptRecordError(f"{where}: {error}") from None
            if buffer is None or len(buffer) < _HEADER.size:
                raise CorruptRecordError(f"{where}: missing or truncated")
            *_, n_config, n_name, _crc = _HEADER.unpack_from(buffer)
            start = len(buffer) - n_config - n_name
            try:
                types.append(bytes(buffer[start : start + n_config]).decode() or None)
            except UnicodeDecodeError:
                raise CorruptRecordError(f"{where}: its config_type is not UTF-8 (corrupted record)") from None
        return types

    def read(self, index: int) -> dict[str, Any]:
        """Structure ``index`` as a dict of numpy arrays (labels present only when stored)."""
        if not 0 <= index < self._count:
            raise IndexError(f"{self.path}: index {index} out of range for a store of {self._count}")
        where = f"{self.path}: record {index}"
        try:
            buffer = self._transaction().get(record_key(index))
        except lmdb.Error as error:
            raise CorruptRecordError(f"{where}: {error}") from None
        if buffer is None:
            raise CorruptRecordError(f"{where}: missing from the store")
        record = decode_record(buffer, where)
        sources = self.metadata["sources"]
        source_id = record.pop("source_id")
        if source_id >= len(sources):
            raise CorruptRecordError(f"{where}: source id {source_id}, the store has {len(sources)} source(s)")
        record["source"] = sources[source_id]
        return record


class _EnvironmentRegistry:
    """One read-only LMDB environment per store file and process, shared by its readers.

    LMDB forbids opening one environment twice in a process, and using one after ``fork``; so
    environments are reference-counted per (device, inode) of ``data.mdb``, and a forked child
    closes the ones it inherited (harmless for read-only, lock-free environments: it only unmaps
    the child's copy) before opening its own.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.entries: dict[tuple[int, int], list[Any]] = {}

    def _key(self, path: Path) -> tuple[int, int]:
        stat = os.stat(path / "data.mdb")
        return stat.st_dev, stat.st_ino

    def after_fork(self) -> None:
        if self.pid != os.getpid():
            self.lock = threading.Lock()
            for env, _ in self.entries.values():
                env.close()
            self.entries, self.pid = {}, os.getpid()

    def acquire(self, path: Path) -> tuple[lmdb.Environment, tuple[int, int]]:
        self.after_fork()
        with self.lock:
            key = self._key(path)
            entry = self.entries.get(key)
            if entry is None:
                check_lmdb_file(path / "data.mdb")
                try:
                    env = lmdb.open(
                        str(path), subdir=True, readonly=True, lock=False, readahead=False, meminit=False,
                        max_readers=4096, max_spare_txns=4,
                    )
                except lmdb.Error as error:
                    raise StoreError(f"{path / 'data.mdb'}: LMDB cannot open it: {error}") from None
                entry = self.entries[key] = [env, 0]
            entry[1] += 1
            return entry[0], key

    def release(self, key: tuple[int, int]) -> None:
        self.after_fork()
        with self.lock:
            entry = self.entries.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] <= 0:
                entry[0].close()
                del self.entries[key]


_ENVIRONMENTS = _EnvironmentRegistry()
