"""The labels of a list of ASE structures, read with the library's reader.

:func:`sevenomni.data.readers.ase_files.record_from_atoms` finds and validates them as ingestion
does (``REF_energy``, ``REF_forces``, ``REF_stress`` by default, else the structure's calculator).
"""

from __future__ import annotations

from sevenomni.core.keys import VOIGT
from sevenomni.data.readers.ase_files import record_from_atoms
from sevenomni.data.readers.common import LabelKeys


def reference(structures: list) -> dict[str, list]:
    """The structures' labels: ``energy`` (eV), ``forces`` ([N, 3] eV/Å) and ``stress`` (Voigt-6
    xx yy zz yz xz xy in eV/Å³, ASE sign; None where a structure has none)."""
    records = [record_from_atoms(atoms, "structures", index, LabelKeys()) for index, atoms in enumerate(structures)]
    return {
        "energy": [record.energy for record in records],
        "forces": [record.forces for record in records],
        "stress": [None if record.stress is None else record.stress.reshape(9)[list(VOIGT)] for record in records],
    }
