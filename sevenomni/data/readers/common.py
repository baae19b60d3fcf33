"""What every reader shares: label keys and their lookup, the one validation function, and
rejection records.

A reader turns one source file into a stream of :class:`~sevenomni.data.store.codec.Record` (valid) or
:class:`Rejected` (a bad record, with a reason code), so that ``--skip-bad`` can go on past a bad
record and count it, and the default can stop at it naming the file and record index.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from ase.data import atomic_numbers as SYMBOL_TO_Z

from sevenomni.core.base import DEFAULT_MIN_DISTANCE, REFERENCE_CUTOFF
from sevenomni.data.graph import StructureError, check_cell, check_structure, closest_pair, describe_pair
from sevenomni.data.store import MAX_Z, Record

# Reason codes of rejected records (stored, counted, printed).
NON_FINITE = "non_finite"
BAD_POSITIONS = "bad_positions"
NO_ATOMS = "no_atoms"
ZERO_VOLUME = "zero_volume"
BAD_CELL = "bad_cell"  # beyond the neighbour search's limits at the reference cutoff (graph.check_cell)
FORCES_SHAPE = "forces_shape"
STRESS_SHAPE = "stress_shape"
MISSING_ENERGY = "missing_energy"
MISSING_LABEL = "missing_label"
CLOSE_ATOMS = "close_atoms"
UNKNOWN_ELEMENT = "unknown_element"
UNREADABLE = "unreadable"
BASELINE_FAILED = "baseline_failed"  # a Δ-learning baseline could not compute the structure
REASONS = (
    NON_FINITE, BAD_POSITIONS, NO_ATOMS, ZERO_VOLUME, BAD_CELL, CLOSE_ATOMS, FORCES_SHAPE, STRESS_SHAPE,
    MISSING_ENERGY, MISSING_LABEL, UNKNOWN_ELEMENT, UNREADABLE, BASELINE_FAILED,
)


@dataclass(frozen=True)
class SourceFormat:
    """A reader, as the registry sees it: each reader module defines one as ``SOURCE_FORMAT``.

    ``sevenomni.data.readers`` finds every module of its package that has one, so a new reader
    is one new file. Detection of a file's format (``--format auto``) tries the formats whose
    ``suffixes`` end the file name and whose ``claims`` (if any) accepts the file; a file no
    format claims is read by the fallback format (``ase``).
    """

    name: str
    read: Callable[..., RecordStream]  # (path, LabelKeys) -> stream of Record | Rejected
    summary: str
    suffixes: tuple[str, ...] = ()  # lower-case file-name endings
    claims: Callable[[Path], bool] | None = None  # a closer look at a file with a matching suffix
    count: Callable[[Path], int] | None = None  # number of records, cheaply (for a progress bar)
    fallback: bool = False


class InvalidRecordError(ValueError):
    """A record fails validation; the message names the file and the record index."""

    def __init__(self, source: str, index: int | str, reason: str, detail: str) -> None:
        self.source, self.index, self.reason, self.detail = source, index, reason, detail
        super().__init__(f"{source}: record {index}: {detail} [{reason}]")


class SourceError(ValueError):
    """A source file cannot be read at all (wrong layout, unknown format, truncated)."""


@dataclass(frozen=True)
class Rejected:
    """A bad record: where it is and why it was refused."""

    source: str
    index: int
    reason: str
    message: str

    def error(self) -> InvalidRecordError:
        return InvalidRecordError(self.source, self.index, self.reason, self.message)


@dataclass(frozen=True)
class LabelKeys:
    """Where a reader finds labels, and what it requires of a record.

    A key that is set is a contract: a record that does not hold it is rejected
    (``missing_label``). Only an unset key (``None``) falls back: to the format's default key,
    then to the calculator's result for that label (see :class:`LabelLookup`). Atoms nearer
    than ``min_distance`` Å (periodic images included; 0 turns the check off) reject a record.
    """

    energy: str | None = None
    forces: str | None = None
    stress: str | None = None
    require_energy: bool = True
    min_distance: float = DEFAULT_MIN_DISTANCE

    def unset_generic(self) -> LabelKeys:
        """For native formats: the generic ``REF_*`` names count as unset (the format's own labels)."""
        unset = lambda key: None if key in GENERIC_KEYS else key
        return replace(self, energy=unset(self.energy), forces=unset(self.forces), stress=unset(self.stress))


# The ecosystem's extxyz defaults: for native formats they mean "this format's own labels".
GENERIC_KEYS = ("REF_energy", "REF_forces", "REF_stress")


class LabelLookup:
    """Finds one record's labels by key and remembers where each came from, in ``origin``.

    ``origin`` maps a label to ``"<place>:<key>"`` (``"info:REF_energy"``,
    ``"calculator:energy"``); the store's metadata counts them (``StoreReader.label_sources``).
    """

    def __init__(self, source: str, index: int, calculator: Mapping[str, Any] | None = None) -> None:
        self.source, self.index = source, index
        self.calculator = calculator or {}
        self.origin: dict[str, str] = {}

    def find(self, label: str, key: str | None, default: str | None,
             places: Sequence[tuple[str, Mapping[str, Any]]]) -> Any:
        """The value of ``label``, or None if absent.

        A set ``key`` is looked up in ``places`` in order, then in the calculator's results; if none
        holds it the record is rejected. An unset one looks up ``default`` in ``places``, then the
        calculator's result named ``label``.
        """
        lookups = [(where, mapping, default if key is None else key) for where, mapping in places]
        if self.calculator:
            lookups.append(("calculator", self.calculator, label if key is None else key))
        for where, mapping, name in lookups:
            if name is not None and name in mapping:
                value = mapping[name]
                if value is not None:
                    self.origin[label] = f"{where}:{name}"
                return value
        if key is not None:
            present = "; ".join(
                f"{where} has {', '.join(repr(k) for k in sorted(mapping)) or 'no keys'}" for where, mapping, _ in lookups
            )
            raise InvalidRecordError(self.source, self.index, MISSING_LABEL,
                                     f"no {label} under the key {key!r} ({present})")
        return None


def to_atomic_numbers(species: Any) -> np.ndarray:
    """Symbols or numbers -> int64 atomic numbers in 1..118; raises ``KeyError(symbol)`` if unknown."""
    array = np.asarray(species)
    if array.dtype.kind in "iu":
        numbers = array.astype(np.int64)
        bad = numbers[(numbers < 1) | (numbers > MAX_Z)]
        if len(bad):
            raise KeyError(f"atomic number {int(bad[0])}")
        return numbers
    numbers = np.empty(len(array), dtype=np.int64)
    for i, symbol in enumerate(array.tolist()):
        z = SYMBOL_TO_Z.get(symbol, 0) if isinstance(symbol, str) else 0
        if not 1 <= z <= MAX_Z:
            raise KeyError(f"symbol {symbol!r}")
        numbers[i] = z
    return numbers


def as_stress_3x3(value: Any) -> np.ndarray | None:
    """Stress as a 3×3 array from 3×3, 9 or Voigt-6 (xx, yy, zz, yz, xz, xy); None if neither."""
    array = np.asarray(value, dtype=np.float64)
    if array.shape in ((3, 3), (9,)):
        return array.reshape(3, 3).copy()
    if array.shape == (6,):
        xx, yy, zz, yz, xz, xy = array
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    return None


def _float_or_nan(value: Any) -> float:
    if value is None:  # JSON null: how orjson/json write NaN
        return float("nan")
    array = np.asarray(value, dtype=np.float64)
    if array.size != 1:
        raise ValueError(f"expected a number, got shape {array.shape}")
    return float(array.reshape(()))


def validate_record(
    *,
    source: str,
    index: int,
    species: Any,
    positions: Any,
    cell: Any = None,
    pbc: Any = False,
    energy: Any = None,
    forces: Any = None,
    stress: Any = None,
    charge: Any = None,
    spin: Any = None,
    require_energy: bool = True,
    min_distance: float = DEFAULT_MIN_DISTANCE,
    config_type: str | None = None,
    name: str | None = None,
    origin: dict[str, str] | None = None,
) -> Record:
    """The single validation every reader uses; raises :class:`InvalidRecordError`.

    Checks: known elements; positions (N, 3) and finite, periodic cell of non-zero volume
    (``graph.check_structure``) within the neighbour search's limits at ``REFERENCE_CUTOFF``
    (``graph.check_cell``); no two atoms nearer than ``min_distance`` Å, periodic images
    included (``graph.closest_pair``; 0 turns it off); energy present if required and finite;
    forces (N, 3) and finite; stress 3×3 or Voigt-6 and finite.
    """

    def fail(reason: str, detail: str) -> InvalidRecordError:
        return InvalidRecordError(source, index, reason, detail)

    try:
        numbers = to_atomic_numbers(species)
    except KeyError as error:
        raise fail(UNKNOWN_ELEMENT, f"unknown element {error.args[0]}") from None
    try:
        positions = np.asarray(positions, dtype=np.float64)
        cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
        pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    except (TypeError, ValueError) as error:
        raise fail(BAD_POSITIONS, f"cannot read positions/cell/pbc: {error}") from None
    if cell.shape == (3,):
        cell = np.diag(cell)
    if cell.shape != (3, 3):
        raise fail(BAD_POSITIONS, f"cell must be 3x3, got shape {cell.shape}")
    if positions.ndim == 2 and len(positions) != len(numbers):
        raise fail(BAD_POSITIONS, f"{len(numbers)} elements but {len(positions)} positions")
    try:
        check_structure(positions, cell, pbc, "structure")
    except ValueError as error:
        text = str(error).removeprefix("structure: ")
        reason = (
            ZERO_VOLUME if "zero volume" in text
            else NON_FINITE if "NaN" in text
            else NO_ATOMS if "no atoms" in text
            else BAD_POSITIONS
        )
        raise fail(reason, text) from None
    try:
        check_cell(positions, cell, pbc, REFERENCE_CUTOFF, "structure")
    except StructureError as error:
        raise fail(BAD_CELL, str(error).removeprefix("structure: ")) from None
    pair = closest_pair(positions, cell, pbc, min_distance)
    if pair is not None:
        raise fail(CLOSE_ATOMS, f"{describe_pair(*pair)} (minimum {min_distance} Å)")
    n = len(numbers)

    energy_value: float | None = None
    if energy is not None or require_energy:
        if energy is None:
            raise fail(MISSING_ENERGY, "no energy label")
        try:
            energy_value = _float_or_nan(energy)
        except (TypeError, ValueError) as error:
            raise fail(NON_FINITE, f"energy is not a number: {error}") from None
        if not np.isfinite(energy_value):
            raise fail(NON_FINITE, f"energy is {energy_value}")

    forces_value = None
    if forces is not None:
        try:
            forces_value = np.asarray(forces, dtype=np.float64)
        except (TypeError, ValueError):
            raise fail(FORCES_SHAPE, "forces are not a numeric array") from None
        if forces_value.shape != (n, 3):
            raise fail(FORCES_SHAPE, f"forces must have shape ({n}, 3), got {forces_value.shape}")
        if not np.isfinite(forces_value).all():
            raise fail(NON_FINITE, "forces contain NaN or inf")

    stress_value = None
    if stress is not None:
        try:
            stress_value = as_stress_3x3(stress)
        except (TypeError, ValueError):
            stress_value = None
        if stress_value is None:
            shape = np.shape(stress) if not isinstance(stress, (str, bytes)) else "text"
            raise fail(STRESS_SHAPE, f"stress must be 3x3, 9 or Voigt-6 values, got shape {shape}")
        if not np.isfinite(stress_value).all():
            raise fail(NON_FINITE, "stress contains NaN or inf")

    extras = {}
    for key, value in (("charge", charge), ("spin", spin)):
        if value is not None:
            try:
                extras[key] = _float_or_nan(value)
            except (TypeError, ValueError) as error:
                raise fail(NON_FINITE, f"{key} is not a number: {error}") from None
            if not np.isfinite(extras[key]):
                raise fail(NON_FINITE, f"{key} is {extras[key]}")

    return Record(
        numbers=numbers, positions=positions, cell=cell, pbc=pbc, energy=energy_value,
        forces=forces_value, stress=stress_value, charge=extras.get("charge"), spin=extras.get("spin"),
        source=source, index=int(index), config_type=config_type, name=name, origin=origin,
    )


def guarded(source: str, index: int, build: Callable[[], Record]) -> Record | Rejected:
    """Run one record's parse + validation; a failure becomes a :class:`Rejected`."""
    try:
        return build()
    except InvalidRecordError as error:
        return Rejected(source, index, error.reason, error.detail)
    except (KeyError, ValueError, TypeError, IndexError, AttributeError) as error:
        return Rejected(source, index, UNREADABLE, f"cannot parse record: {type(error).__name__}: {error}")


RecordStream = Iterator[Record | Rejected]
