"""``.aselmdb`` files (fairchem's ASE-LMDB backend: OMat24, OMol25, OC20), read without fairchem.

Layout: an LMDB *file* (``subdir=False``); key ``b"<id>"`` (ids 1, 2, …) holds
``zlib(json(row))`` where ``row`` is an ASE ``AtomsRow`` dict (``numbers``, ``positions``,
``cell``, ``pbc``, calculator results ``energy``/``forces``/``stress`` [Voigt-6], plus
``key_value_pairs`` and ``data``); reserved keys ``nextid``, ``deleted_ids``, ``metadata``.
OMol25 keeps ``charge`` and ``spin`` in ``data``. NaN is written as JSON ``null`` and rejected.
Record index = row id.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import lmdb
import numpy as np

from sevenomni.core.keys import ENERGY, FORCES, STRESS
from sevenomni.data.readers.common import (
    LabelKeys,
    LabelLookup,
    RecordStream,
    SourceError,
    SourceFormat,
    guarded,
    validate_record,
)
from sevenomni.data.store import Record

RESERVED_KEYS = (b"nextid", b"deleted_ids", b"metadata")


def _decode(raw: bytes) -> Any:
    return json.loads(zlib.decompress(raw))


def count_rows(path: str | Path) -> int:
    """Number of rows (for a progress bar), without reading them."""
    env = _open(path)
    try:
        with env.begin() as txn:
            raw_next, raw_deleted = txn.get(b"nextid"), txn.get(b"deleted_ids")
            if raw_next is None:
                return sum(1 for key, _ in txn.cursor() if key.isdigit())
            return int(_decode(raw_next)) - 1 - (len(_decode(raw_deleted)) if raw_deleted else 0)
    finally:
        env.close()


def _open(path: str | Path) -> lmdb.Environment:
    try:
        return lmdb.open(str(path), subdir=False, readonly=True, lock=False, readahead=False, meminit=False)
    except lmdb.Error as error:
        raise SourceError(f"{path}: not a readable .aselmdb (LMDB) file: {error}") from error


def _row_to_record(row: dict[str, Any], source: str, index: int, keys: LabelKeys) -> Record:
    """Labels: a set key in key_value_pairs, data or the calculator results (the row's own
    ``energy``/``forces``/``stress``); an unset one is the calculator result."""
    kvp = row.get("key_value_pairs") or {}
    data = row.get("data") or {}
    calculator = {name: row[name] for name in ("energy", "free_energy", "forces", "stress") if name in row}
    labels = LabelLookup(source, index, calculator)
    places = [("key_value_pairs", kvp), ("data", data)]

    def extra(name: str) -> Any:
        return data.get(name, kvp.get(name, row.get(name)))

    energy = labels.find(ENERGY, keys.energy, None, places)
    forces = labels.find(FORCES, keys.forces, None, places)
    stress = labels.find(STRESS, keys.stress, None, places)
    config_type = extra("config_type")
    return validate_record(
        source=source, index=index, species=np.asarray(row["numbers"], dtype=np.int64),
        positions=row["positions"], cell=row.get("cell"), pbc=row.get("pbc", False),
        energy=energy, forces=forces, stress=stress,
        charge=extra("charge"), spin=extra("spin"), require_energy=keys.require_energy,
        min_distance=keys.min_distance,
        config_type=str(config_type) if config_type is not None else None,
        name=str(row["unique_id"]) if row.get("unique_id") is not None else None, origin=labels.origin,
    )


def read_aselmdb(path: str | Path, keys: LabelKeys) -> RecordStream:
    """Rows in id order, skipping deleted ids; labels default to the calculator results."""
    source = str(path)
    keys = keys.unset_generic()
    env = _open(path)
    try:
        with env.begin(buffers=False) as txn:
            raw_next = txn.get(b"nextid")
            raw_deleted = txn.get(b"deleted_ids")
            deleted = set(_decode(raw_deleted)) if raw_deleted else set()
            if raw_next is not None:
                ids: Any = range(1, int(_decode(raw_next)))
            else:  # no nextid: take the numeric keys, in numeric order
                ids = sorted(int(k) for k, _ in txn.cursor() if k.isdigit())
            for row_id in ids:
                if row_id in deleted:
                    continue
                raw = txn.get(str(row_id).encode("ascii"))
                if raw is None:
                    continue

                def build(raw=raw, row_id=row_id) -> Record:
                    try:
                        row = _decode(raw)
                    except (zlib.error, ValueError) as error:
                        raise ValueError(f"row is not zlib-compressed JSON: {error}") from None
                    return _row_to_record(row, source, row_id, keys)

                yield guarded(source, row_id, build)
    finally:
        env.close()


def aselmdb_files(path: str | Path) -> list[Path]:
    """A ``.aselmdb`` file, or every ``*.aselmdb`` in a directory (sorted)."""
    path = Path(path)
    if path.is_dir():
        return sorted(path.glob("*.aselmdb"))
    return [path]


SOURCE_FORMAT = SourceFormat(
    name="aselmdb",
    read=read_aselmdb,
    summary="fairchem ``.aselmdb`` files, or a directory of them (OMat24, OMol25, OC20)",
    suffixes=(".aselmdb",),
    count=count_rows,
)
