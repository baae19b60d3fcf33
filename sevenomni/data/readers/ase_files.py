"""Any ASE-readable file: extxyz (streamed frame by frame), ASE databases, VASP OUTCAR/vasprun, …

Labels are looked up under the configured keys (``atoms.info`` for energy and stress,
``atoms.arrays`` for forces; ASE db key-value pairs and data count as info/arrays), then among the
results of the structure's calculator (VASP files; extxyz ``energy=``/``forces`` fields, which ASE
reads into a calculator). A key given explicitly must be found there, or the record is rejected;
only an unset key falls back from ``REF_*`` to the calculator's value of that label. The store's
metadata counts where every label came from (``sevenomni data info`` shows it).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
from ase import Atoms
from ase.io.extxyz import read_xyz
from ase.io.formats import filetype, open_with_compression

from sevenomni.core.keys import ENERGY, FORCES, STRESS
from sevenomni.data.readers.common import (
    UNKNOWN_ELEMENT,
    LabelKeys,
    LabelLookup,
    RecordStream,
    Rejected,
    SourceError,
    SourceFormat,
    guarded,
    validate_record,
)
from sevenomni.data.store import Record

DEFAULT_KEYS = ("REF_energy", "REF_forces", "REF_stress")
_CHARGE_KEYS = ("charge", "total_charge")
_SPIN_KEYS = ("spin", "spin_multiplicity")


def _first(mapping: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if key in mapping:
            return mapping[key]
    return None


def _calculator_results(atoms: Atoms) -> dict[str, Any]:
    calc = atoms.calc
    return dict(getattr(calc, "results", {}) or {}) if calc is not None else {}


def record_from_atoms(
    atoms: Atoms, source: str, index: int, keys: LabelKeys,
    info: Mapping[str, Any] | None = None, arrays: Mapping[str, Any] | None = None,
) -> Record:
    """Validate one ``Atoms`` (labels by key, then from its calculator) into a record."""
    info = dict(atoms.info) if info is None else {**atoms.info, **info}
    arrays = dict(atoms.arrays) if arrays is None else {**atoms.arrays, **arrays}
    labels = LabelLookup(source, index, _calculator_results(atoms))
    energy_default, forces_default, stress_default = DEFAULT_KEYS
    energy = labels.find(ENERGY, keys.energy, energy_default, [("info", info)])
    forces = labels.find(FORCES, keys.forces, forces_default, [("arrays", arrays)])
    stress = labels.find(STRESS, keys.stress, stress_default, [("info", info)])
    config_type = info.get("config_type")
    return validate_record(
        source=source, index=index, species=atoms.numbers, positions=atoms.positions,
        cell=atoms.cell.array, pbc=atoms.pbc, energy=energy, forces=forces, stress=stress,
        charge=_first(info, _CHARGE_KEYS), spin=_first(info, _SPIN_KEYS),
        require_energy=keys.require_energy, min_distance=keys.min_distance,
        config_type=str(config_type) if config_type is not None else None, origin=labels.origin,
    )


def _extxyz_frames(path: str) -> Iterator[tuple[int, str]]:
    """Split an (ext)xyz file into frame texts without parsing them (so one bad frame is skippable)."""
    try:
        with open_with_compression(path, "r") as handle:
            yield from _frames(handle, path)
    except UnicodeDecodeError as error:
        raise SourceError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start} of a line; "
                          "a binary or UTF-16 file?)") from None


def _frames(handle, path: str) -> Iterator[tuple[int, str]]:
    index = line_no = 0
    while True:
        first = handle.readline()
        line_no += 1
        if not first:
            return
        if not first.strip():
            continue
        try:
            natoms = int(first.split()[0])
        except ValueError:
            natoms = -1
        if natoms < 0:
            raise SourceError(
                f"{path}: record {index} (line {line_no}): expected an atom count, got {first.strip()[:60]!r}"
            )
        lines = [first]
        for _ in range(natoms + 1):
            line = handle.readline()
            if not line:
                raise SourceError(f"{path}: record {index} (line {line_no}): file ends inside the frame")
            lines.append(line)
        line_no += natoms + 1
        yield index, "".join(lines)
        index += 1


def _parse_extxyz_frame(text: str, source: str, index: int, keys: LabelKeys) -> Record | Rejected:
    try:
        atoms = next(read_xyz(io.StringIO(text), 0))
    except KeyError as error:  # ASE's symbol lookup
        return Rejected(source, index, UNKNOWN_ELEMENT, f"unknown element {error.args[0]!r}")
    except Exception as error:  # noqa: BLE001 - any parse failure of this frame is this record's fault
        return Rejected(source, index, "unreadable", f"cannot parse frame: {type(error).__name__}: {error}")
    return guarded(source, index, lambda: record_from_atoms(atoms, source, index, keys))


def read_extxyz(path: str, keys: LabelKeys) -> RecordStream:
    for index, text in _extxyz_frames(path):
        yield _parse_extxyz_frame(text, path, index, keys)


def read_ase_db(path: str, keys: LabelKeys) -> RecordStream:
    """ASE database (SQLite ``.db`` or JSON): key-value pairs and data count as labels. Index = row id."""
    import ase.db

    with ase.db.connect(path, use_lock_file=False) as db:
        for row in db.select():
            index = row.id

            def build(row=row, index=index) -> Record:
                data = dict(row.get("data") or {})
                info = {**row.key_value_pairs, **{k: v for k, v in data.items() if np.ndim(v) != 2}}
                arrays = {k: v for k, v in data.items() if np.ndim(v) == 2}
                return record_from_atoms(row.toatoms(), path, index, keys, info=info, arrays=arrays)

            yield guarded(path, index, build)


def read_with_ase(path: str, keys: LabelKeys, format: str | None = None) -> RecordStream:
    """Any other ASE format through ``ase.io.iread``; a parse error stops the file (it cannot resync)."""
    frames = ase.io.iread(path, index=":", format=format)
    index = 0
    while True:
        try:
            atoms = next(frames)
        except StopIteration:
            return
        except Exception as error:
            raise SourceError(f"{path}: record {index}: ASE cannot read it: {type(error).__name__}: {error}") from error
        yield guarded(path, index, partial(record_from_atoms, atoms, path, index, keys))
        index += 1


def read_ase_file(path: str | Path, keys: LabelKeys) -> RecordStream:
    """Dispatch on ASE's own format detection."""
    path = str(path)
    try:
        fmt = filetype(path)
    except Exception as error:
        raise SourceError(f"{path}: ASE cannot tell its format: {error}") from error
    if fmt in ("extxyz", "xyz"):
        return read_extxyz(path, keys)
    if fmt in ("db", "json"):
        return read_ase_db(path, keys)
    return read_with_ase(path, keys, fmt)


SOURCE_FORMAT = SourceFormat(
    name="ase",
    read=read_ase_file,
    summary="anything ``ase.io`` reads: extxyz (frame-streamed), ASE db, OUTCAR, vasprun.xml, …",
    fallback=True,
)
