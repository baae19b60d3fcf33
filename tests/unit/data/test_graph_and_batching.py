"""Neighbour lists, batching, separability, isolated atoms and smoothness at the cutoff."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list as ase_neighbor_list
from conftest import make_model, structures

from sevenomni import predict
from sevenomni.data.graph import atoms_to_graph


def pairs(graph):
    sender, receiver = graph.edge_index.numpy()
    shifts = graph.cell_shift.numpy().astype(int)
    return sorted(zip(receiver.tolist(), sender.tolist(), map(tuple, shifts.tolist())))


@pytest.mark.parametrize("name", list(structures()))
@pytest.mark.parametrize("cutoff", [2.5, 6.0])
def test_neighbor_list_matches_ase(name, cutoff):
    atoms = structures()[name]
    i, j, shifts = ase_neighbor_list("ijS", atoms, cutoff)
    expected = sorted(zip(i.tolist(), j.tolist(), map(tuple, shifts.tolist())))
    assert pairs(atoms_to_graph(atoms, cutoff)) == expected


def test_cell_much_smaller_than_cutoff_sees_many_images():
    atoms = bulk("Si", "fcc", a=2.0)  # one atom, a tiny cell
    graph = atoms_to_graph(atoms, 6.0)
    assert graph.edge_index.shape[1] > 200
    assert (graph.edge_index[0] == graph.edge_index[1]).all()


def test_batched_equals_one_by_one():
    model = make_model()
    items = list(structures().values())
    one_by_one = [next(predict(model, [a], "crystal", batch_size=1)) for a in items]
    batched = list(predict(model, items, "crystal", batch_size=len(items)))
    for single, together in zip(one_by_one, batched):
        assert together["energy"] == pytest.approx(single["energy"], abs=1e-10)
        np.testing.assert_allclose(together["forces"], single["forces"], atol=1e-10)
        if "stress" in single:
            np.testing.assert_allclose(together["stress"], single["stress"], atol=1e-10)


def test_distant_molecules_add_up():
    model = make_model()
    a, b = molecule("H2O"), molecule("CH4")
    b.positions += [40.0, 0.0, 0.0]
    (ea, eb, eab) = [r["energy"] for r in predict(model, [a, b, a + b], "molecule")]
    assert eab == pytest.approx(ea + eb, abs=1e-10)


def test_isolated_atom_energy_is_finite_position_independent_and_forceless():
    model = make_model()
    energies = []
    for position, cell, pbc in [
        ([0.0, 0.0, 0.0], None, False),
        ([3.0, -7.0, 11.0], None, False),
        ([1.0, 1.0, 1.0], [20.0, 20.0, 20.0], True),
    ]:
        atom = Atoms("O", positions=[position], cell=cell, pbc=pbc)
        (result,) = predict(model, [atom], "molecule")
        assert np.isfinite(result["energy"])
        np.testing.assert_allclose(result["forces"], 0.0, atol=1e-12)
        energies.append(result["energy"])
    assert energies[0] == pytest.approx(energies[1], abs=1e-12)
    assert energies[0] == pytest.approx(energies[2], abs=1e-12)


@pytest.mark.parametrize("envelope", ["polynomial", "xplor"])
def test_energy_is_continuous_across_the_cutoff(envelope):
    model = make_model(envelope=envelope, xplor_on=3.0 if envelope == "xplor" else None)
    cutoff = model.cutoff
    distances = cutoff + np.linspace(-1e-3, 1e-3, 21)
    energies = []
    for d in distances:
        dimer = Atoms("CO", positions=[[0, 0, 0], [d, 0, 0]])
        energies.append(next(predict(model, [dimer], "molecule"))["energy"])
    energies = np.array(energies)
    assert np.abs(np.diff(energies)).max() < 1e-9
    # Beyond the cutoff the pair is two isolated atoms.
    assert energies[-1] == pytest.approx(energies[-2], abs=1e-14)
