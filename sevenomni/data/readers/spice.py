"""SPICE HDF5 (SPICE-2 layout), one molecule group at a time.

Layout: one group per molecule, holding ``atomic_numbers`` [N], ``conformations`` [M, N, 3]
(bohr), ``dft_total_energy`` [M] (hartree), ``dft_total_gradient`` [M, N, 3] (hartree/bohr),
``mbis_charges`` [M, N, 1], ``smiles`` and ``subset`` (byte strings); datasets carry a ``units``
attribute, which is honoured (bohr/angstrom/nanometer; hartree/eV/kJ/mol…). Forces = -gradient.
Total charge = round(Σ MBIS charges) when present. Molecules: no cell, no periodicity.
Record index counts conformations across groups (groups in file order); name = "group/conf".
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from ase.units import Bohr, Hartree, kcal, kJ, mol, nm

from sevenomni.core.keys import ENERGY, FORCES
from sevenomni.data.readers.common import (
    InvalidRecordError,
    LabelKeys,
    LabelLookup,
    RecordStream,
    Rejected,
    SourceError,
    SourceFormat,
    guarded,
    validate_record,
)

DEFAULT_ENERGY_KEY, DEFAULT_FORCES_KEY = "dft_total_energy", "dft_total_gradient"  # no stress: molecules
_LENGTH = {"bohr": Bohr, "angstrom": 1.0, "nanometer": nm, "nm": nm}
_ENERGY = {"hartree": Hartree, "ev": 1.0, "kj/mol": kJ / mol, "kcal/mol": kcal / mol}


def _h5py():
    try:
        import h5py
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise SourceError("reading SPICE HDF5 needs h5py (pip install h5py)") from error
    return h5py


def _unit(dataset: Any, default: str) -> str:
    unit = dataset.attrs.get("units", default)
    return (unit.decode() if isinstance(unit, bytes) else str(unit)).strip().lower()


def _energy_factor(unit: str, where: str) -> float:
    unit = unit.replace(" ", "").replace("mole", "mol").replace("kilojoule", "kj").replace("kilocalorie", "kcal")
    if unit not in _ENERGY:
        raise SourceError(f"{where}: unknown energy unit {unit!r}")
    return _ENERGY[unit]


def _gradient_factor(unit: str, where: str) -> float:
    """'energy/length' (e.g. 'hartree/bohr') -> factor to eV/Å."""
    energy, _, length = unit.replace(" ", "").rpartition("/")
    if energy not in _ENERGY or length not in _LENGTH:
        raise SourceError(f"{where}: unknown gradient unit {unit!r}")
    return _ENERGY[energy] / _LENGTH[length]


def _text(group: Any, key: str) -> str | None:
    if key not in group:
        return None
    value = np.asarray(group[key][()]).ravel()
    if not len(value):
        return None
    item = value[0]
    return item.decode() if isinstance(item, bytes) else str(item)


def count_conformations(path: str | Path) -> int:
    h5py = _h5py()
    with h5py.File(path, "r") as handle:
        return sum(
            int(group["conformations"].shape[0])
            for group in handle.values()
            if isinstance(group, h5py.Group) and "conformations" in group
        )


def read_spice(path: str | Path, keys: LabelKeys) -> RecordStream:
    h5py = _h5py()
    source = str(path)
    keys = keys.unset_generic()
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise SourceError(f"{source}: not a readable HDF5 file: {error}") from error
    index = 0
    with handle:
        for group_name, group in handle.items():
            where = f"{source}: group {group_name!r}"
            if not isinstance(group, h5py.Group) or "conformations" not in group or "atomic_numbers" not in group:
                raise SourceError(f"{where}: not a SPICE molecule group (needs atomic_numbers and conformations)")
            numbers = np.asarray(group["atomic_numbers"][()])
            conformations = group["conformations"]
            length_unit = _unit(conformations, "bohr")
            if length_unit not in _LENGTH:
                raise SourceError(f"{where}: unknown length unit {length_unit!r}")
            positions = np.asarray(conformations[()], dtype=np.float64) * _LENGTH[length_unit]
            m = positions.shape[0]
            labels = LabelLookup(source, index)
            try:
                energy_set = labels.find(ENERGY, keys.energy, DEFAULT_ENERGY_KEY, [("spice", group)])
                forces_set = labels.find(FORCES, keys.forces, DEFAULT_FORCES_KEY, [("spice", group)])
            except InvalidRecordError as error:  # a named dataset this group lacks: all its records
                for k in range(m):
                    yield Rejected(source, index + k, error.reason, error.detail)
                index += m
                continue
            energies = forces = charges = None
            if energy_set is not None:
                energies = np.asarray(energy_set[()], dtype=np.float64).reshape(-1) * _energy_factor(
                    _unit(energy_set, "hartree"), where)
            if forces_set is not None:
                sign = -1.0 if "gradient" in forces_set.name.rsplit("/", 1)[-1] else 1.0
                forces = sign * np.asarray(forces_set[()], dtype=np.float64) * _gradient_factor(
                    _unit(forces_set, "hartree/bohr"), where)
            if "mbis_charges" in group:
                charges = np.asarray(group["mbis_charges"][()], dtype=np.float64).reshape(m, -1).sum(axis=1)
            subset = _text(group, "subset")
            for k in range(m):
                build = partial(
                    validate_record, source=source, index=index, species=numbers, positions=positions[k],
                    energy=energies[k] if energies is not None and k < len(energies) else None,
                    forces=forces[k] if forces is not None and k < len(forces) else None,
                    charge=float(np.round(charges[k])) if charges is not None else None,
                    require_energy=keys.require_energy, min_distance=keys.min_distance, config_type=subset, name=f"{group_name}/{k}",
                    origin=labels.origin,
                )
                yield guarded(source, index, build)
                index += 1


SOURCE_FORMAT = SourceFormat(
    name="spice",
    read=read_spice,
    summary="SPICE-2 HDF5",
    suffixes=(".h5", ".hdf5"),
    count=count_conformations,
)
