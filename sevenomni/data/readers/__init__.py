"""Readers of every supported source format into validated records.

Each reader module defines a :class:`~sevenomni.data.readers.common.SourceFormat`
(``SOURCE_FORMAT``); this package finds them all, so adding a format is adding one module.
``python -c "from sevenomni.data.readers import describe_formats; print(describe_formats())"``
lists them: ase (anything ``ase.io`` reads), aselmdb (fairchem), mptrj, spice (SPICE-2 HDF5)
and store (an existing sevenomni store).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path

from sevenomni.data.format_names import FORMATS, SOURCE_FORMAT_NAMES
from sevenomni.data.readers.aselmdb import aselmdb_files
from sevenomni.data.readers.common import (
    REASONS,
    InvalidRecordError,
    LabelKeys,
    Rejected,
    SourceError,
    SourceFormat,
    validate_record,
)
from sevenomni.data.store import is_store


def _discover() -> dict[str, SourceFormat]:
    found = {}
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        source_format = getattr(importlib.import_module(f"{__name__}.{module.name}"), "SOURCE_FORMAT", None)
        if source_format is not None:
            if source_format.name in found:
                raise RuntimeError(f"two readers call their format {source_format.name!r}")
            found[source_format.name] = source_format
    return found


SOURCE_FORMATS: dict[str, SourceFormat] = _discover()
if tuple(SOURCE_FORMATS) != SOURCE_FORMAT_NAMES:
    raise RuntimeError(
        f"readers found {list(SOURCE_FORMATS)}; sevenomni.data.format_names lists {list(SOURCE_FORMAT_NAMES)}: update it"
    )

__all__ = [
    "FORMATS", "REASONS", "SOURCE_FORMATS", "InvalidRecordError", "LabelKeys", "Rejected", "SourceError",
    "SourceFormat", "count_hint", "describe_formats", "detect_format", "expand_sources", "read_source",
    "validate_record",
]


def describe_formats() -> str:
    return "\n".join(f"{f.name:<9} {f.summary}" for f in SOURCE_FORMATS.values())


def detect_format(path: str | Path) -> str:
    """Format of one file by its name (and, where a format asks, a look inside)."""
    path = Path(path)
    name = path.name.lower()
    for source_format in SOURCE_FORMATS.values():
        suffix_matches = bool(source_format.suffixes) and name.endswith(source_format.suffixes)
        if suffix_matches and (source_format.claims is None or source_format.claims(path)):
            return source_format.name
    return next(f.name for f in SOURCE_FORMATS.values() if f.fallback)


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


def read_source(path: str | Path, format: str, keys: LabelKeys) -> Iterator:
    """Stream of Record | Rejected for one file in the given (resolved) format."""
    if format not in SOURCE_FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {', '.join(SOURCE_FORMATS)}")
    return SOURCE_FORMATS[format].read(path, keys)


def count_hint(path: str | Path, format: str) -> int | None:
    """Number of records when it is cheap to know (for the progress bar), else None."""
    count = SOURCE_FORMATS[format].count if format in SOURCE_FORMATS else None
    if count is None:
        return None
    try:
        return count(Path(path))
    except Exception:  # noqa: BLE001 - a hint only; reading reports the real error
        return None
