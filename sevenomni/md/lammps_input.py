"""A LAMMPS input as the driver runs it: the setup before the first run, the rest, and structure files.

The model's ``fix external`` can only be defined once the box exists, should come before the
input's own fixes (so that a fix printing the energy at the start of a run sees the model's), and
must be wired to Python before any step is taken. So the driver runs the input in two parts: the
commands before the first one that runs or branches (``run``, ``minimize``, ``label``, ``jump``,
...) one by one, then the rest as a file of its own (so ``label``/``jump SELF`` loops in it work).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase.io import read, write

# Commands that take steps or change the flow of the input; the model must be in place before them.
RUNNING_COMMANDS = frozenset({"run", "minimize", "rerun", "label", "jump", "next", "if", "include"})


@dataclass(frozen=True)
class SplitInput:
    """The setup commands of a LAMMPS input (continuations joined) and its text from the first running command on."""

    setup: list[str]
    rest: str


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(index of its first physical line, the joined text) of each command; ``&`` continues a line."""
    lines, start, pending = [], 0, ""
    physical = text.splitlines()
    for index, line in enumerate(physical):
        if not pending:
            start = index
        stripped = line.rstrip()
        if stripped.endswith("&"):
            pending += stripped[:-1] + " "
            continue
        lines.append((start, pending + line))
        pending = ""
    if pending:
        lines.append((start, pending))
    return lines


def split_input(text: str) -> SplitInput:
    """Split ``text`` before its first command in :data:`RUNNING_COMMANDS`."""
    physical = text.splitlines(keepends=True)
    setup = []
    for start, line in logical_lines(text):
        words = line.split()
        if words and words[0] in RUNNING_COMMANDS:
            return SplitInput(setup, "".join(physical[start:]))
        setup.append(line)
    return SplitInput(setup, "")


def structure_to_data(source: str | Path, target: Path) -> list[str]:
    """Write any ASE-readable structure as a LAMMPS data file (metal units, atomic style, masses and,
    where the structure has them, velocities); return the element of each atom type, in type order."""
    try:
        atoms = read(source)
    except FileNotFoundError:
        raise FileNotFoundError(f"structure file {source} does not exist") from None
    except Exception as error:  # noqa: BLE001 - ASE's readers fail in many ways
        raise ValueError(f"structure {source}: ASE cannot read it ({type(error).__name__}: {error})") from None
    elements = sorted(set(atoms.get_chemical_symbols()))
    velocities = atoms.has("momenta") and bool(np.any(atoms.get_momenta()))
    write(target, atoms, format="lammps-data", specorder=elements, masses=True, velocities=velocities, units="metal")
    return elements
