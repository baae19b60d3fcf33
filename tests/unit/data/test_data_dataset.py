"""LMDBDataset: graphs with labels and masks, lazy and fork-safe loading, splits, specs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.data import chemical_symbols
from data_helpers import records
from pydantic import ValidationError
from torch.utils.data import ConcatDataset, DataLoader

from sevenomni.data.dataset import LMDBDataset, database_datasets, split_indices
from sevenomni.data.graph import arrays_to_graph, collate
from sevenomni.data.sampler import MultiDatabaseSampler
from sevenomni.data.spec import DatabaseSpec, SamplingSpec, SplitSpec
from sevenomni.data.store import write_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("ds") / "store"
    items = records(40, seed=1)
    items[3].energy = None
    items[4].forces = None
    write_store(items, path)
    return path, items


def test_item_is_graph_plus_labels(store):
    path, items = store
    dataset = LMDBDataset(path, cutoff=3.0, task_index=2, database_index=5)
    assert len(dataset) == 40
    for i in (1, 2, 3, 4):
        graph, record = dataset[i], items[i]
        reference = arrays_to_graph(record.numbers, record.positions, record.cell, record.pbc, 3.0)
        assert torch.equal(graph.edge_index, reference.edge_index)
        assert torch.equal(graph.cell_shift, reference.cell_shift)
        assert graph.energy.dtype == torch.float64 and graph.energy.shape == (1,)
        assert graph.forces.shape == (len(record.numbers), 3) and graph.stress.shape == (1, 3, 3)
        assert graph.task.tolist() == [2] and graph.database.tolist() == [5]
        assert graph.has_energy.item() == (record.energy is not None)
        assert graph.has_forces.item() == (record.forces is not None)
        assert graph.has_stress.item() == (record.stress is not None)
        if record.stress is not None:
            np.testing.assert_array_equal(graph.stress[0].numpy(), record.stress)
        else:
            assert not graph.stress.any()
    assert dataset[3].energy.item() == 0.0 and not dataset[4].forces.any()
    assert dataset.num_atoms(7) == len(items[7].numbers)
    assert dataset.elements == [chemical_symbols[z] for z in sorted({int(z) for r in items for z in r.numbers})]


def test_indices_and_several_stores(store, tmp_path):
    path, items = store
    more = records(5, seed=9)
    write_store(more, tmp_path / "more")
    dataset = LMDBDataset([path, tmp_path / "more"], 3.0, 0, 0, indices=np.array([41, 0, 44]))
    assert len(dataset) == 3
    np.testing.assert_array_equal(dataset[0].pos.numpy(), more[1].positions)
    np.testing.assert_array_equal(dataset[1].pos.numpy(), items[0].positions)
    np.testing.assert_array_equal(dataset.atom_counts, [len(more[1].numbers), len(items[0].numbers), len(more[4].numbers)])
    with pytest.raises(IndexError):
        LMDBDataset(path, 3.0, 0, 0, indices=np.array([40]))
    with pytest.raises(IndexError):
        dataset[3]


def test_dataloader_workers_fork_safely(store):
    path, items = store
    first = LMDBDataset(path, 3.0, 0, 0)
    second = LMDBDataset(path, 3.0, 1, 1, indices=np.arange(10))
    first[0]  # the parent has the environment open before forking
    concat = ConcatDataset([first, second])
    sampler = MultiDatabaseSampler([len(first), len(second)], [first.atom_counts, second.atom_counts],
                                   SamplingSpec(batch_size=8, seed=3), None)
    loader = DataLoader(concat, batch_sampler=sampler, collate_fn=collate, num_workers=2)
    seen = []
    for batch, indices in zip(loader, MultiDatabaseSampler(
            [len(first), len(second)], [first.atom_counts, second.atom_counts], SamplingSpec(batch_size=8, seed=3), None)):
        assert batch.num_graphs == len(indices)
        expected_tasks = [0 if i < 40 else 1 for i in indices]
        assert batch.task.tolist() == expected_tasks and batch.database.tolist() == expected_tasks
        assert batch.energy.shape == (len(indices),) and batch.stress.shape == (len(indices), 3, 3)
        seen += indices
    assert sorted(seen) == list(range(50))
    assert first[1].energy.item() == items[1].energy  # the parent still reads after the workers


def test_split_is_reproducible_and_exact():
    train, valid = split_indices(1000, 0.1, seed=4)
    assert len(valid) == 100 and len(train) == 900
    assert np.intersect1d(train, valid).size == 0 and np.union1d(train, valid).tolist() == list(range(1000))
    again, valid_again = split_indices(1000, 0.1, seed=4)
    assert np.array_equal(valid, valid_again) and np.array_equal(train, again) and not np.array_equal(valid, split_indices(1000, 0.1, seed=5)[1])
    assert len(split_indices(10, 0.0)[1]) == 0


def test_database_datasets_follow_the_split(store, tmp_path):
    path, _ = store
    spec = DatabaseSpec(name="a", path=str(path), task="pbe", split=SplitSpec(valid_fraction=0.25, seed=1))
    train, valid = database_datasets(spec, [path], 3.0, 0, 0)
    assert len(train) == 30 and len(valid) == 10
    write_store(records(4), tmp_path / "valid")
    spec = DatabaseSpec(name="a", path=str(path), task="pbe", split=SplitSpec(valid_path=str(tmp_path / "valid")))
    train, valid = database_datasets(spec, [path], 3.0, 0, 0, valid_stores=[tmp_path / "valid"])
    assert len(train) == 40 and len(valid) == 4


def test_label_sources_of_a_dataset_add_up_its_stores(tmp_path):
    first, second = records(3, seed=1), records(2, seed=2)
    for record in first:
        record.origin = {"energy": "info:REF_energy", "forces": "arrays:REF_forces"}
    for record in second:
        record.origin = {"energy": "calculator:energy", "forces": "arrays:REF_forces"}
    write_store(first, tmp_path / "a")
    write_store(second, tmp_path / "b")
    dataset = LMDBDataset([tmp_path / "a", tmp_path / "b"], 3.0, 0, 0)
    assert dataset.label_sources == {"energy": "info:REF_energy (3), calculator:energy (2)",
                                     "forces": "arrays:REF_forces"}


def test_specs_validate():
    spec = DatabaseSpec(name="omat", path=["a", "b"], task="PBE", loss_weights={"stress": 0.1})
    assert spec.loss_weights == {"energy": 1.0, "forces": 1.0, "stress": 0.1} and spec.paths == ["a", "b"]
    assert spec.energy_key is spec.forces_key is spec.stress_key is None  # unset: the formats' defaults
    with pytest.raises(ValidationError, match="energy_key"):
        DatabaseSpec(name="x", path="a", task="t", energy_key="")
    assert spec.min_distance == 0.1 and DatabaseSpec(name="x", path="a", task="t", min_distance=0).min_distance == 0
    with pytest.raises(ValidationError, match="min_distance"):
        DatabaseSpec(name="x", path="a", task="t", min_distance=-0.1)
    assert spec.split.valid_fraction == 0.1 and spec.weight is None
    with pytest.raises(ValidationError, match="unknown loss_weights"):
        DatabaseSpec(name="x", path="a", task="t", loss_weights={"virial": 1.0})
    with pytest.raises(ValidationError, match="extra"):
        DatabaseSpec(name="x", path="a", task="t", colour="red")
    with pytest.raises(ValidationError, match="exactly one"):
        SamplingSpec(mode="ratio", batch_size=4, max_atoms=100)
    with pytest.raises(ValidationError, match="exactly one"):
        SamplingSpec(mode="ratio")
    with pytest.raises(ValidationError):
        SamplingSpec(mode="temperature", temperature=0.0, batch_size=2)
    with pytest.raises(ValidationError, match="either valid_fraction or valid_path"):
        SplitSpec(valid_fraction=0.2, valid_path="v")


def test_worker_collate_hands_over_the_same_batch(store):
    from multiprocessing.reduction import ForkingPickler

    from sevenomni.data.dataset import worker_collate

    path, _ = store
    dataset = LMDBDataset(path, 3.0, 1, 2)
    graphs = [dataset[i] for i in range(6)]
    reference = collate(graphs)
    moved = ForkingPickler.loads(ForkingPickler.dumps(worker_collate(graphs)))
    assert moved.num_graphs == 6 and set(moved.keys()) == set(reference.keys())
    for key in reference.keys():
        if isinstance(reference[key], torch.Tensor):
            assert torch.equal(moved[key], reference[key]), key
        else:
            assert moved[key] == reference[key], key
    assert torch.equal(moved.get_example(4).pos, graphs[4].pos)
    loader = DataLoader(dataset, batch_size=7, collate_fn=worker_collate, num_workers=2)
    for batch, indices in zip(loader, [range(i, min(i + 7, 40)) for i in range(0, 40, 7)]):
        assert torch.equal(batch.energy, collate([dataset[i] for i in indices]).energy)
