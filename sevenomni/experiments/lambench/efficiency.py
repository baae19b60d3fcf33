"""LAMBench's efficiency M_E: µs per atom for energy + forces + stress on cells of 800–1,000 atoms."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from sevenomni.experiments.lambench.accuracy import pick

ETA_REFERENCE_US = 100.0  # µs/atom
EFFICIENCY_STRUCTURES = ["test_crystal_gfn1:Si_diamond", "test_crystal_gfn1:MgO_rocksalt"]

CalculatorFor = Callable[[str], Calculator]  # test-set name -> the calculator to use on it


def replicate(atoms: Atoms, low: int = 800, high: int = 1000) -> tuple[Atoms, tuple[int, int, int]]:
    """The most cubic supercell of ``atoms`` with between ``low`` and ``high`` atoms (most atoms first)."""
    lengths = atoms.cell.lengths()
    best = None
    for a in range(1, 21):
        for b in range(1, 21):
            for c in range(1, 21):
                size = len(atoms) * a * b * c
                if not low <= size <= high:
                    continue
                extent = lengths * (a, b, c)
                key = (-size, extent.max() / extent.min())
                if best is None or key < best[0]:
                    best = (key, (a, b, c))
    if best is None:
        raise ValueError(f"{atoms.get_chemical_formula()}: no supercell with {low}–{high} atoms")
    return atoms.repeat(best[1]), best[1]


def time_call(atoms: Atoms, calculator: Calculator, seed: int) -> float:
    """Seconds for energy + forces + stress of a freshly rattled copy."""
    atoms = atoms.copy()
    atoms.rattle(0.01, seed=seed)
    atoms.calc = calculator
    start = time.perf_counter()
    atoms.get_potential_energy()
    atoms.get_forces()
    atoms.get_stress()
    return time.perf_counter() - start


def efficiency(calculator_for: CalculatorFor, sets: dict, specs: Sequence[str], warmup: int, repeats: int) -> dict:
    structures = []
    for spec in specs:
        set_name, atoms = pick(sets, spec)
        big, replication = replicate(atoms)
        calculator = calculator_for(set_name)
        for seed in range(warmup):
            time_call(big, calculator, seed)
        seconds = [time_call(big, calculator, warmup + seed) for seed in range(repeats)]
        per_atom = [1e6 * s / len(big) for s in seconds]
        structures.append({
            "structure": spec, "atoms": len(big), "replication": list(replication),
            "seconds": seconds, "us_per_atom": float(np.mean(per_atom)),
        })
        print(f"[lambench] efficiency {spec} ×{replication} = {len(big)} atoms: {np.mean(per_atom):.1f} µs/atom",
              flush=True)
    eta = float(np.mean([s["us_per_atom"] for s in structures]))
    return {"structures": structures, "us_per_atom": eta, "M_E": ETA_REFERENCE_US / eta}


# ---------------------------------------------------------------------------------- instability
