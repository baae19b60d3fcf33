"""Writing a store: :class:`StoreWriter` (streaming, atomic), :func:`write_store`, and the cleanup
of the partial directories that killed writers leave.

A store is written under ``<out>.partial-*`` (its writer holding a lock there, so that a later
writer removes the directories of killed ones) and renamed into place only when complete.
"""

from __future__ import annotations

import array
import errno
import fcntl
import glob
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
from ase.data import chemical_symbols

from sevenomni.core.files import describe_os_error, new_sibling
from sevenomni.core.keys import ENERGY, FORCES, STRESS
from sevenomni.data.store.codec import SOURCE_ID, EncodedRecord, Record, prepare_record, sealed
from sevenomni.data.store.errors import StoreError
from sevenomni.data.store.layout import (
    FORMAT_NAME,
    FORMAT_VERSION,
    LABEL_ENERGY,
    LABEL_FORCES,
    LABEL_STRESS,
    METADATA_KEY,
    SIDECARS,
    UNITS,
    record_key,
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
        self.spools = {name: _Spool(self.tmp / f"{name}.raw", dtype) for name, dtype in SIDECARS.items()}
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
        data = item.data if source_id == 0 else sealed(item.data[:8] + SOURCE_ID.pack(source_id) + item.data[12:])
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
            "arrays": {name: f"{name}.npy" for name in SIDECARS},
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
