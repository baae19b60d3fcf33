"""Reader of an existing sevenomni store: re-ingest or merge stores, re-validating every record."""

from __future__ import annotations

from pathlib import Path

from sevenomni.core.keys import ENERGY, FORCES, STRESS
from sevenomni.data.readers.common import (
    InvalidRecordError,
    LabelKeys,
    RecordStream,
    Rejected,
    SourceFormat,
    validate_record,
)
from sevenomni.data.store import StoreReader


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


def count_records(path: Path) -> int:
    return len(StoreReader(path))


SOURCE_FORMAT = SourceFormat(
    name="store",
    read=read_store,
    summary="an existing sevenomni store, a directory (re-ingest / merge)",
    count=count_records,
)
