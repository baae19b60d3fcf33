"""Statistics: element reference energies, neighbour counts, force RMS."""

from __future__ import annotations

import numpy as np
import pytest
from data_helpers import records

from sevenomni.data.dataset import LMDBDataset
from sevenomni.data.graph import neighbor_list
from sevenomni.data.statistics import (
    average_num_neighbors,
    element_count_matrix,
    element_reference_energies,
    force_rms,
    reference_energies,
)
from sevenomni.data.store import StoreReader, write_store

TRUE_E0 = {1: -0.5, 6: -7.2, 8: -9.1}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Structures of H, C, O whose energies are exactly Σ_Z n_Z e_Z (+ tiny noise)."""
    rng = np.random.default_rng(0)
    items = records(200, seed=2)
    for record in items:
        record.numbers = rng.choice([1, 6, 8], size=len(record.numbers))
        record.energy = sum(TRUE_E0[int(z)] for z in record.numbers) + rng.normal(scale=1e-6)
    items[0].energy = None
    path = tmp_path_factory.mktemp("stats") / "store"
    write_store(items, path)
    return path, items


def test_reference_energies_recover_the_truth(store):
    path, _ = store
    matrix = element_count_matrix(path)
    assert matrix.shape == (200, 119)
    energies = StoreReader(path).energies
    fitted = element_reference_energies(energies, matrix)
    for z, e0 in TRUE_E0.items():
        assert fitted[z] == pytest.approx(e0, abs=1e-4)
    unseen = np.setdiff1d(np.arange(119), list(TRUE_E0))
    assert np.all(fitted[unseen] == 0.0) and np.isfinite(fitted).all()
    np.testing.assert_allclose(reference_energies(path), fitted, atol=1e-8)
    np.testing.assert_allclose(reference_energies(path, sample=60, seed=1)[[1, 6, 8]], fitted[[1, 6, 8]], atol=1e-4)


def test_statistics_of_a_split_use_its_items_only(store):
    path, items = store
    subset = LMDBDataset(path, 3.0, 0, 0, indices=np.arange(100, 150))
    matrix = element_count_matrix(subset)
    assert matrix.shape == (50, 119)
    np.testing.assert_array_equal(matrix[0], np.bincount(items[100].numbers, minlength=119))
    forces = np.concatenate([items[i].forces.ravel() for i in range(100, 150)])
    assert force_rms(subset, sample=None) == pytest.approx(np.sqrt(np.mean(forces**2)))


def test_average_num_neighbors_matches_neighbor_lists(store):
    path, items = store
    edges = sum(len(neighbor_list(r.positions, r.cell, r.pbc, 2.5)[0]) for r in items)
    atoms = sum(len(r.numbers) for r in items)
    assert average_num_neighbors(path, 2.5, sample=None) == pytest.approx(edges / atoms)
    sampled = average_num_neighbors([StoreReader(path)], 2.5, sample=50, seed=3)
    assert sampled == average_num_neighbors(path, 2.5, sample=50, seed=3) and sampled > 0


def test_force_rms_from_metadata_equals_reading_records(store):
    path, items = store
    forces = np.concatenate([r.forces.ravel() for r in items])
    assert force_rms(path) == pytest.approx(np.sqrt(np.mean(forces**2)))
    assert force_rms(path, sample=10_000) == pytest.approx(force_rms(path))
    assert abs(force_rms(path, sample=50, seed=1) - force_rms(path)) < 0.3


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="energies"):
        element_reference_energies(np.zeros(3), np.zeros((4, 119)))
