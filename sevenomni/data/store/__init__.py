"""The project's structure store: one LMDB directory, written atomically, read lazily.

:mod:`~sevenomni.data.store.layout` (the files of a store, format constants, the metadata record),
:mod:`~sevenomni.data.store.codec` (one record's bytes), :mod:`~sevenomni.data.store.writer`,
:mod:`~sevenomni.data.store.reader` with :mod:`~sevenomni.data.store.environments` (the LMDB handles
its readers share) and :mod:`~sevenomni.data.store.lmdb_file` (checks before LMDB maps a file),
:mod:`~sevenomni.data.store.errors`. The names below are importable from here.
"""

from sevenomni.data.store.codec import EncodedRecord, Record, prepare_record, sealed
from sevenomni.data.store.errors import CorruptRecordError, StoreError
from sevenomni.data.store.layout import LABEL_ENERGY, LABEL_FORCES, MAX_Z, METADATA_KEY, is_store, record_key
from sevenomni.data.store.reader import StoreReader, describe_label_origins
from sevenomni.data.store.writer import StoreWriter, write_store

__all__ = [
    "LABEL_ENERGY",
    "LABEL_FORCES",
    "MAX_Z",
    "METADATA_KEY",
    "CorruptRecordError",
    "EncodedRecord",
    "Record",
    "StoreError",
    "StoreReader",
    "StoreWriter",
    "describe_label_origins",
    "is_store",
    "prepare_record",
    "record_key",
    "sealed",
    "write_store",
]
