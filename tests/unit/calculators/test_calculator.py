"""The ASE calculator: dynamics, optimization, properties and bad input."""

import copy

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS
from conftest import make_model

from sevenomni import PredictionError, SevenOmniCalculator, predict, save_checkpoint
from sevenomni.data.graph import atoms_to_graph


@pytest.fixture(scope="module")
def model():
    return make_model()


def systems():
    crystal = bulk("Si", "diamond", a=5.43) * (2, 1, 1)
    crystal.rattle(0.05, seed=1)
    water = molecule("H2O")
    water.rattle(0.05, seed=1)
    return {"periodic": crystal, "molecular": water}


@pytest.mark.parametrize("kind", ["periodic", "molecular"])
def test_velocity_verlet_conserves_energy(model, kind):
    atoms = systems()[kind]
    atoms.calc = SevenOmniCalculator(model, task="crystal", device="cpu")
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    start = atoms.get_total_energy()
    VelocityVerlet(atoms, timestep=0.25 * units.fs).run(40)
    assert abs(atoms.get_total_energy() - start) / len(atoms) < 5e-3


@pytest.mark.parametrize("kind", ["periodic", "molecular"])
def test_bfgs_lowers_energy(model, kind):
    atoms = systems()[kind]
    atoms.calc = SevenOmniCalculator(model, task="molecule")
    start = atoms.get_potential_energy()
    BFGS(atoms, logfile=None).run(fmax=0.05, steps=30)
    assert atoms.get_potential_energy() < start


def test_properties_and_checkpoint_path(model, tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(model, path)
    crystal = systems()["periodic"]
    crystal.calc = SevenOmniCalculator(path, task="Crystal", dtype="float32")
    energy = crystal.get_potential_energy()
    assert crystal.get_potential_energy(force_consistent=True) == energy
    assert crystal.get_potential_energies().sum() == pytest.approx(energy, rel=1e-5)
    assert crystal.get_forces().shape == (len(crystal), 3)
    assert crystal.get_stress().shape == (6,)
    water = systems()["molecular"]
    water.calc = SevenOmniCalculator(model, task="molecule")
    with pytest.raises(PropertyNotImplementedError):
        water.get_stress()


def test_common_channel_in_calculator(model):
    atoms = systems()["molecular"]
    common = SevenOmniCalculator(model, task="common", shift_task="molecule").get_potential_energy(atoms)
    task = SevenOmniCalculator(model, task="molecule").get_potential_energy(atoms)
    assert common != pytest.approx(task)
    with pytest.raises(ValueError, match="common channel needs"):
        SevenOmniCalculator(model, task="common")


def test_bad_input(model):
    with pytest.raises(ValueError, match=r"unknown task 'dft'.*\['crystal', 'molecule'\]"):
        SevenOmniCalculator(model, task="dft")
    calc = SevenOmniCalculator(model, task="crystal")
    with pytest.raises(ValueError, match=r"\['Fe'\] not in this model's elements \['H', 'C', 'N', 'O', 'Si'\]"):
        calc.get_potential_energy(Atoms("FeO", positions=[[0, 0, 0], [1.6, 0, 0]]))
    nan_atoms = molecule("H2O")
    nan_atoms.positions[0, 0] = np.nan
    with pytest.raises(ValueError, match="positions contain NaN"):
        calc.get_potential_energy(nan_atoms)
    inf_cell = bulk("Si")
    inf_cell.cell[0, 0] = np.inf
    with pytest.raises(ValueError, match="cell contains NaN"):
        calc.get_potential_energy(inf_cell)
    flat = Atoms("Si2", positions=[[0, 0, 0], [1, 1, 0]], cell=[[3, 0, 0], [0, 3, 0], [0, 0, 0]], pbc=True)
    with pytest.raises(ValueError, match="zero volume"):
        calc.get_potential_energy(flat)
    with pytest.raises(ValueError, match="dtype"):
        SevenOmniCalculator(model, task="crystal", dtype="float16")


def test_coincident_atoms_are_an_error_not_nan(model):
    water = molecule("H2O")
    stacked = water.copy()
    stacked.positions[2] = stacked.positions[0]
    with pytest.raises(PredictionError, match=r"structure 3 \(H2O\): atoms 0 and 2 are 0.0000 Å apart; "
                                              r"the model's energy, energies, forces are not finite"):
        list(predict(model, [water, water, water, stacked], task="molecule", batch_size=2, device="cpu"))
    crystal = bulk("Si", "diamond", a=5.43)
    crystal.positions[1] = crystal.positions[0] + crystal.cell[0]  # on a periodic image of atom 0
    with pytest.raises(PredictionError, match=r"structure 0 \(Si2\): atoms 0 and 1 are 0.0000 Å apart through "
                                              r"the periodic image \[-1, 0, 0\]"):
        SevenOmniCalculator(model, task="crystal").get_potential_energy(crystal)


def test_out_of_gpu_memory_names_the_sizes_and_the_remedies(model, monkeypatch):
    big = copy.deepcopy(model).set_tp_backend("e3nn")

    def exhausted(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.37 GiB.\nmore text")

    monkeypatch.setattr(big, "forward", exhausted)
    crystal = bulk("Si", "diamond", a=5.43, cubic=True)
    with pytest.raises(torch.cuda.OutOfMemoryError) as caught:
        list(predict(big, [molecule("H2O"), crystal], task="crystal", batch_size=2, device="cpu"))
    message = str(caught.value)
    edges = len(atoms_to_graph(molecule("H2O"), big.cutoff).edge_index[0]) + len(
        atoms_to_graph(crystal, big.cutoff).edge_index[0]
    )
    assert f"structure(s) 0–1: 11 atoms, {edges} edges within {big.cutoff} Å, tp_backend e3nn" in message
    assert "a smaller batch_size or tp_backend='cueq'" in message and "Tried to allocate 4.37 GiB" in message
    assert "more text" not in message


def test_non_finite_output_is_an_error(model):
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.energy_shift.weight.fill_(float("nan"))
    water = molecule("H2O")
    with pytest.raises(PredictionError, match=r"structure 0 \(H2O\): the model's energy, energies are not finite"):
        SevenOmniCalculator(broken, task="molecule").get_forces(water)


def test_cuda_without_cuda_is_a_clear_error(model):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="device 'cuda'.*CUDA is not available"):
        SevenOmniCalculator(model, task="crystal", device="cuda")
