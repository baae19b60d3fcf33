"""LAMBench's instability M_IS: the total-energy drift of NVE runs."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet

from sevenomni.experiments.lambench.accuracy import pick
from sevenomni.experiments.lambench.efficiency import CalculatorFor

PHI_TOLERANCE = 5e-4  # eV/atom/ps
FAILED_INDEX = 5.0
FAILED_SLOPE = 50.0  # eV/atom/ps
MD_STRUCTURES = ["test_crystal_gfn1:Si_diamond", "test_crystal_gfn1:MgO_rocksalt", "test_molecule_gfn2:C5H8"]


def instability_index(phi: float | None) -> float:
    """max(0, log10(Φ / Φ_tol)); 5 for a failed run (None, non-finite or Φ ≥ 50 eV/atom/ps)."""
    if phi is None or not math.isfinite(phi) or phi >= FAILED_SLOPE:
        return FAILED_INDEX
    return max(0.0, math.log10(phi / PHI_TOLERANCE)) if phi > 0 else 0.0


def nve_drift(atoms: Atoms, calculator: Calculator, steps: int, timestep_fs: float = 1.0,
              temperature_K: float = 300.0) -> dict:
    """Run NVE and fit the energy drift; ``phi`` None if the run failed."""
    atoms = atoms.copy()
    atoms.calc = calculator
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=np.random.default_rng(0))
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)
    dynamics = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    energies = []

    def record() -> None:
        energy = atoms.get_total_energy()
        if not math.isfinite(energy) or abs(energy) > 1e10:
            raise FloatingPointError(f"total energy {energy} at step {dynamics.nsteps}")
        energies.append(energy)

    dynamics.attach(record, interval=1)
    start, error = time.perf_counter(), None
    try:
        dynamics.run(steps)
    except Exception as failure:  # noqa: BLE001 - any failure of the simulation is a blow-up
        error = f"{type(failure).__name__}: {failure}"
    seconds = time.perf_counter() - start
    phi = None
    if error is None and len(energies) > 2:
        times_ps = np.arange(len(energies)) * timestep_fs / 1000.0
        keep = slice(int(0.2 * len(energies)), None)
        slope = np.polyfit(times_ps[keep], np.array(energies)[keep], 1)[0]
        phi = abs(float(slope)) / len(atoms)
    return {
        "atoms": len(atoms), "steps_done": int(dynamics.nsteps), "seconds": seconds, "phi": phi,
        "index": instability_index(phi), "error": error,
        "energy_first_last": [energies[0], energies[-1]] if energies else None,
    }


def instability(calculator_for: CalculatorFor, sets: dict, specs: Sequence[str], steps: int) -> dict:
    structures = []
    for spec in specs:
        set_name, atoms = pick(sets, spec)
        result = {"structure": spec, **nve_drift(atoms, calculator_for(set_name), steps)}
        structures.append(result)
        phi = "failed" if result["phi"] is None else f"Φ = {result['phi']:.2e} eV/atom/ps"
        print(f"[lambench] NVE {spec} ({result['atoms']} atoms, {steps} steps): {phi}, index {result['index']:.2f}",
              flush=True)
    return {"structures": structures, "M_IS": float(np.mean([s["index"] for s in structures]))}


# ---------------------------------------------------------------------------------- calculators
