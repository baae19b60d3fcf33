"""Reading a store: :class:`StoreReader`, read-only and lazy, which checks what it opens.

A reader refuses a directory without the metadata record (``"complete": true``), and damaged
files (a truncated or foreign ``data.mdb``, a sidecar of the wrong length) with a
:class:`StoreError` naming the file, before anything is mapped. It compares the sidecars with a
sample of records when it opens a store, and with all of them in :meth:`StoreReader.verify`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
from pydantic import ValidationError

from sevenomni.core.base import validation_problems
from sevenomni.core.keys import ENERGY, FORCES, STRESS
from sevenomni.data.store.codec import HEADER, decode_record
from sevenomni.data.store.environments import ENVIRONMENTS
from sevenomni.data.store.errors import CorruptRecordError, StoreError
from sevenomni.data.store.layout import (
    FORMAT_NAME,
    FORMAT_VERSION,
    LABEL_ENERGY,
    LABEL_FORCES,
    LABEL_STRESS,
    MAX_Z,
    METADATA_KEY,
    SIDECARS,
    StoreMetadata,
    record_key,
)

# Records compared with the sidecar arrays whenever a store is opened (the first, the last and
# some in between); ``StoreReader.verify`` compares every one.
SIDECAR_SAMPLE = 8


def describe_label_origins(origins: dict[str, dict[str, int]]) -> dict[str, str]:
    """Label -> where it came from, from per-origin counts: ``"info:REF_energy"`` when every
    structure's label came from one place, else ``"info:REF_energy (6), calculator:energy (2)"``."""
    out = {}
    for label, counts in origins.items():
        ranked = sorted(counts.items(), key=lambda item: -item[1])  # ties: in order of first use
        out[label] = ranked[0][0] if len(ranked) == 1 else ", ".join(f"{where} ({n:,})" for where, n in ranked)
    return out


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
        for name, dtype in SIDECARS.items():
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
                ENVIRONMENTS.after_fork()  # closes the inherited environments first
                self._env = self._txn = None
            self._env, self._env_key = ENVIRONMENTS.acquire(self.path)
            self._txn = self._env.begin(write=False, buffers=False)
            self._pid = os.getpid()
        return self._txn

    def close(self) -> None:
        """Release this reader's LMDB handles (it reopens on the next read)."""
        if self._txn is not None and self._pid == os.getpid():
            self._txn.abort()
            ENVIRONMENTS.release(self._env_key)
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
            if buffer is None or len(buffer) < HEADER.size:
                raise CorruptRecordError(f"{where}: missing or truncated")
            *_, n_config, n_name, _crc = HEADER.unpack_from(buffer)
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
