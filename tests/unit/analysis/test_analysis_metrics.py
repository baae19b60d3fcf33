"""Error metrics: cMAE by reduced composition, the softening scale, masks of missing labels."""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from sevenomni.analysis.metrics import ErrorAccumulator, composition_centred, reduced_compositions
from sevenomni.data.graph import atoms_to_graph, collate


def labelled_batch(structures, energies, forces, stresses=None):
    graphs = []
    for i, atoms in enumerate(structures):
        graph = atoms_to_graph(atoms, 3.0)
        graph.energy = torch.tensor([energies[i]], dtype=torch.float64)
        graph.forces = torch.as_tensor(forces[i], dtype=torch.float64)
        stress = None if stresses is None else stresses[i]
        graph.stress = torch.zeros(1, 3, 3, dtype=torch.float64) if stress is None else torch.as_tensor(stress).view(1, 3, 3)
        graph.has_energy = torch.tensor([True])
        graph.has_forces = torch.tensor([True])
        graph.has_stress = torch.tensor([stress is not None])
        graph.task = torch.tensor([0])
        graphs.append(graph)
    return collate(graphs)


def test_reduced_composition_groups_supercells():
    cell = bulk("MgO", "rocksalt", a=4.2)
    batch = collate([atoms_to_graph(a, 3.0) for a in (cell, cell * (2, 1, 1), molecule("H2O"))])
    keys = reduced_compositions(batch.atomic_numbers, batch.batch, 3)
    assert keys[0] == keys[1] == ((8, 1), (12, 1))
    assert keys[2] == ((1, 2), (8, 1))


def test_composition_centred_removes_each_groups_mean():
    errors = np.array([1.0, 3.0, 10.0, -5.0])
    centred = composition_centred(errors, ["a", "a", "b", "c"])
    np.testing.assert_allclose(centred, [-1.0, 1.0, 0.0, 0.0])


def test_cmae_ignores_a_constant_offset_per_composition_and_scale_fits_through_origin():
    rng = np.random.default_rng(0)
    water, ammonia = molecule("H2O"), molecule("NH3")
    structures = [water, water, ammonia, ammonia]
    reference_f = [rng.normal(size=(len(a), 3)) for a in structures]
    reference_e = [-10.0, -10.3, -20.0, -19.6]
    batch = labelled_batch(structures, reference_e, reference_f)
    # A method with another absolute reference per composition, forces 0.7x softer.
    offsets = [0.6, 0.6, -0.8, -0.8]
    predicted = {
        "energy": torch.tensor([e + o for e, o in zip(reference_e, offsets)], dtype=torch.float64),
        "forces": 0.7 * torch.cat([torch.as_tensor(f) for f in reference_f]),
    }
    errors = ErrorAccumulator()
    errors.add(batch, predicted)
    summary = errors.summary()
    per_atom = np.abs(offsets) / np.array([3, 3, 4, 4])
    assert summary["energy_mae"] == pytest.approx(1000 * per_atom.mean())
    assert summary["energy_cmae"] == pytest.approx(0.0, abs=1e-9)
    assert summary["softening_scale"] == pytest.approx(0.7)
    component_errors = 0.3 * np.abs(np.concatenate(reference_f))
    assert summary["forces_mae"] == pytest.approx(component_errors.mean())
    assert np.isnan(summary["stress_mae"])  # no stress labels
    assert summary["structures"] == 4


def test_stress_only_where_labelled_and_samples_are_strided():
    crystal = bulk("Si", "diamond", a=5.43) * (2, 1, 1)
    water = molecule("H2O")
    stress = np.diag([0.1, 0.2, 0.3])
    batch = labelled_batch([crystal, water], [-5.0, -3.0], [np.zeros((4, 3)), np.zeros((3, 3))], [stress, None])
    predicted = {
        "energy": torch.tensor([-5.0, -3.0], dtype=torch.float64),
        "forces": torch.ones(7, 3, dtype=torch.float64),
        "stress": torch.zeros(2, 3, 3, dtype=torch.float64),
    }
    errors = ErrorAccumulator(sample_every=2)
    errors.add(batch, predicted)
    summary = errors.summary()
    assert summary["stress_mae"] == pytest.approx(0.6 / 6)  # the molecule's zero stress label is not counted
    assert np.isnan(summary["softening_scale"])  # all reference forces are zero
    assert errors.samples["forces"].shape == (4 * 3, 2)  # atoms 0, 2, 4, 6
    assert errors.samples["energy"].shape == (2, 2)
