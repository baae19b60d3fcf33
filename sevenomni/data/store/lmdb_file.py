"""Checks of a store's LMDB data file (``data.mdb``) against its own header, made before LMDB maps it."""

from __future__ import annotations

import struct
from pathlib import Path

from sevenomni.data.store.errors import StoreError

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
