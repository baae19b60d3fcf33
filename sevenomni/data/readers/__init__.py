"""Readers of every supported source format into validated records.

=========  ==================================================================================
format     what
=========  ==================================================================================
ase        anything ``ase.io`` reads: extxyz (frame-streamed), ASE db, OUTCAR, vasprun.xml, …
aselmdb    fairchem ``.aselmdb`` files, or a directory of them (OMat24, OMol25, OC20)
mptrj      ``MPtrj_2022.9_full.json`` layout (streamed with ijson)
spice      SPICE-2 HDF5
store      an existing sevenomni store (re-ingest / merge)
=========  ==================================================================================
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path

from sevenomni.data.readers.ase_files import read_ase_file
from sevenomni.data.readers.aselmdb import aselmdb_files, count_rows, read_aselmdb
from sevenomni.data.readers.common import (
    REASONS,
    InvalidRecordError,
    LabelKeys,
    RecordStream,
    Rejected,
    SourceError,
    validate_record,
)
from sevenomni.data.readers.mptrj import read_mptrj
from sevenomni.data.readers.spice import count_conformations, read_spice
from sevenomni.data.store import StoreReader, is_store
from sevenomni.keys import ENERGY, FORCES, STRESS

FORMATS = ("auto", "ase", "aselmdb", "mptrj", "spice", "store")

__all__ = [
    "FORMATS", "REASONS", "InvalidRecordError", "LabelKeys", "Rejected", "SourceError",
    "count_hint", "detect_format", "expand_sources", "read_source", "validate_record",
]


def _json_first_key(path: Path) -> str | None:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        head = handle.read(1 << 16).decode("utf-8", errors="replace")
    match = re.match(r'\s*\{\s*"([^"]*)"', head)
    return match.group(1) if match else None


def detect_format(path: str | Path) -> str:
    """Format of one file by its name (and, for JSON, its first key)."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".aselmdb"):
        return "aselmdb"
    if name.endswith((".h5", ".hdf5")):
        return "spice"
    if name.endswith((".json", ".json.gz")):
        first = _json_first_key(path)
        # ASE's JSON database is keyed by row ids ("1", "2", …); MPtrj by material ids ("mp-…").
        return "ase" if first is None or first.isdigit() or first in ("ids", "nextid") else "mptrj"
    return "ase"


def expand_sources(sources: list[str | Path], format: str = "auto") -> list[tuple[Path, str]]:
    """(file, format) pairs: directories become their ``.aselmdb`` files, or a store."""
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    out: list[tuple[Path, str]] = []
    for source in sources:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or directory")
        if path.is_dir():
            if is_store(path):
                out.append((path, "store"))
                continue
            files = aselmdb_files(path)
            if not files:
                raise SourceError(f"{path}: directory is neither a sevenomni store nor holds *.aselmdb files")
            out += [(file, "aselmdb") for file in files]
        else:
            out.append((path, detect_format(path) if format == "auto" else format))
    return out


def read_store(path: str | Path, keys: LabelKeys) -> RecordStream:
    """Records of an existing store, re-validated (labels as stored; a label's origin is the
    source store's when that store took it from one place, else ``store:<path>``)."""
    with StoreReader(path) as reader:
        origins = {label: next(iter(counts)) if len(counts) == 1 else f"store:{path}"
                   for label, counts in reader.label_origins.items()}
        for i in range(len(reader)):
            item = reader.read(i)
            try:
                yield validate_record(
                    source=item["source"] or str(path), index=item["index"], species=item["numbers"],
                    positions=item["positions"], cell=item["cell"], pbc=item["pbc"],
                    energy=item.get(ENERGY), forces=item.get(FORCES), stress=item.get(STRESS),
                    charge=item.get("charge"), spin=item.get("spin"), require_energy=keys.require_energy,
                    min_distance=keys.min_distance,
                    config_type=item["config_type"], name=item["name"],
                    origin={label: origin for label, origin in origins.items() if label in item},
                )
            except InvalidRecordError as error:
                yield Rejected(error.source, error.index, error.reason, error.detail)


def read_source(path: str | Path, format: str, keys: LabelKeys) -> Iterator:
    """Stream of Record | Rejected for one file in the given (resolved) format."""
    readers = {
        "ase": read_ase_file, "aselmdb": read_aselmdb, "mptrj": read_mptrj,
        "spice": read_spice, "store": read_store,
    }
    if format not in readers:
        raise ValueError(f"unknown format {format!r}; choose one of {', '.join(readers)}")
    return readers[format](path, keys)


def count_hint(path: str | Path, format: str) -> int | None:
    """Number of records when it is cheap to know (for the progress bar), else None."""
    try:
        if format == "aselmdb":
            return count_rows(path)
        if format == "spice":
            return count_conformations(path)
        if format == "store":
            return len(StoreReader(path))
    except Exception:  # noqa: BLE001 - a hint only; reading reports the real error
        return None
    return None
