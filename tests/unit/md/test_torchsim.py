"""The TorchSim interface: a batch of different systems as the calculator gives them one by one; NVE as ASE's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet

torch_sim = pytest.importorskip("torch_sim")

from conftest import make_model, triclinic_crystal  # noqa: E402
from torch_sim.integrators.nve import nve  # noqa: E402

from sevenomni import SevenOmniCalculator  # noqa: E402
from sevenomni.md.torchsim import SevenOmniTorchSimModel  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return make_model()


def periodic_systems() -> list[Atoms]:
    """Three different crystals: sizes, elements and cell shapes differ."""
    silicon = bulk("Si", "diamond", a=5.43, cubic=True)
    silicon.rattle(0.05, seed=3)
    carbon = bulk("C", "diamond", a=3.57) * (2, 1, 1)
    carbon.rattle(0.05, seed=4)
    return [silicon, triclinic_crystal(), carbon]


@pytest.mark.parametrize(
    "channel", [{"task": "crystal"}, {"task": "molecule"}, {"task": "common", "shift_task": "crystal"}],
    ids=["crystal", "molecule", "common"],
)
def test_a_batch_of_systems_gives_what_the_calculator_gives_one_by_one(model, channel):
    systems = periodic_systems()
    interface = SevenOmniTorchSimModel(model, device="cpu", **channel)
    output = interface(torch_sim.io.atoms_to_state(systems, torch.device("cpu"), torch.float64))
    assert output["energy"].shape == (3,) and output["stress"].shape == (3, 3, 3)
    forces = np.split(output["forces"].numpy(), np.cumsum([len(a) for a in systems])[:-1])
    for index, atoms in enumerate(systems):
        atoms.calc = SevenOmniCalculator(model, device="cpu", **channel)
        assert output["energy"][index].item() == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(forces[index], atoms.get_forces(), rtol=0, atol=1e-9)
        np.testing.assert_allclose(output["stress"][index].numpy(), atoms.get_stress(voigt=False), rtol=0, atol=1e-10)


def test_every_channel_comes_from_one_loaded_network(model):
    crystal = SevenOmniTorchSimModel(model, task="crystal", device="cpu")
    molecule = crystal.channel("molecule")
    assert molecule.network is crystal.network
    state = torch_sim.io.atoms_to_state(periodic_systems(), torch.device("cpu"), torch.float64)
    assert not torch.allclose(crystal(state)["energy"], molecule(state)["energy"])


def test_torchsim_nve_follows_ase_velocity_verlet(model):
    atoms = periodic_systems()[0]
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    interface = SevenOmniTorchSimModel(model, task="crystal", device="cpu")
    init, step = nve(interface, dt=torch.tensor(units.fs, dtype=torch.float64), kT=torch.tensor(0.0))
    state = init(torch_sim.io.atoms_to_state([atoms], torch.device("cpu"), torch.float64))
    state.momenta = torch.tensor(atoms.get_momenta())
    reference = atoms.copy()
    reference.calc = SevenOmniCalculator(model, task="crystal", device="cpu")
    dynamics = VelocityVerlet(reference, timestep=units.fs)
    largest = {"energy": 0.0, "position": 0.0}
    for _ in range(50):
        state = step(state)
        dynamics.run(1)
        largest["energy"] = max(largest["energy"], abs(state.energy.item() - reference.get_potential_energy()))
        difference = np.linalg.solve(reference.cell.array.T, (state.positions.numpy() - reference.positions).T).T
        difference = (difference - np.round(difference)) @ reference.cell.array
        largest["position"] = max(largest["position"], float(np.abs(difference).max()))
    assert largest["energy"] <= 1e-6 and largest["position"] <= 1e-6, largest
    assert np.abs(reference.positions - atoms.positions).max() > 1e-2


def test_molecules_get_no_stress(model):
    from ase.build import molecule

    molecules = [molecule("H2O"), molecule("CH4"), molecule("CH3CH2OH")]
    interface = SevenOmniTorchSimModel(model, task="molecule", device="cpu")
    output = interface(torch_sim.io.atoms_to_state(molecules, torch.device("cpu"), torch.float64))
    assert "stress" not in output and output["forces"].shape == (3 + 5 + 9, 3)
    for index, atoms in enumerate(molecules):
        atoms.calc = SevenOmniCalculator(model, task="molecule", device="cpu")
        assert output["energy"][index].item() == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
