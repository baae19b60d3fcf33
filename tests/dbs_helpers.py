"""ASE calculators for the DBS labelling tests: EMT that can be killed once, to test resuming."""

from __future__ import annotations

from pathlib import Path

from ase.calculators.emt import EMT


class KilledOnceEMT(EMT):
    """EMT that exits the process (as a kill would) at its ``kill_at``-th structure, once per ``marker``."""

    calls = 0

    def __init__(self, kill_at: int, marker: str, **kwargs):
        super().__init__(**kwargs)
        self.kill_at, self.marker = kill_at, Path(marker)

    def calculate(self, *args, **kwargs):
        KilledOnceEMT.calls += 1
        if KilledOnceEMT.calls == self.kill_at and not self.marker.exists():
            self.marker.touch()
            raise SystemExit("killed")
        super().calculate(*args, **kwargs)


class PickyEMT(EMT):
    """EMT that fails (as an SCF might) on every structure with an odd number of atoms."""

    def calculate(self, atoms=None, *args, **kwargs):
        if len(atoms) % 2:
            raise RuntimeError("odd structure")
        super().calculate(atoms, *args, **kwargs)
