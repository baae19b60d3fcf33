"""sevenomni.data.pyg_internals against the installed torch_geometric: a batch rebuilt from its parts
splits back into the very graphs it was made of (a torch_geometric that renames or reinterprets its
private batch fields fails here)."""

from __future__ import annotations

from multiprocessing.reduction import ForkingPickler

import pytest
import torch
from ase import Atoms
from conftest import structures
from data_helpers import records
from torch_geometric.data import Batch

from sevenomni.data.dataset import LMDBDataset, worker_collate
from sevenomni.data.graph import atoms_to_graph
from sevenomni.data.pyg_internals import batch_from_parts, batch_parts
from sevenomni.data.store import write_store


def assert_same_graph(graph, original) -> None:
    assert sorted(graph.keys()) == sorted(original.keys())
    assert graph.num_nodes == original.num_nodes
    for key in original.keys():
        value, expected = graph[key], original[key]
        if isinstance(expected, torch.Tensor):
            assert value.dtype == expected.dtype and torch.equal(value, expected), key
        else:
            assert value == expected, key


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """Labelled items of a store, then unlabelled graphs of every periodicity and a lone atom (no edges)."""
    path = tmp_path_factory.mktemp("pyg") / "store"
    items = records(6, seed=2)
    items[1].energy = None
    write_store(items, path)
    dataset = LMDBDataset(path, 3.0, task_index=1, database_index=0)
    labelled = [dataset[i] for i in range(len(items))]
    built = [atoms_to_graph(atoms, 3.0) for atoms in [*structures().values(), Atoms("H", pbc=False)]]
    return labelled, built


def rebuilt(graphs, how: str) -> Batch:
    if how == "parts":
        return batch_from_parts(*batch_parts(Batch.from_data_list(graphs)))
    return ForkingPickler.loads(ForkingPickler.dumps(worker_collate(graphs)))  # the worker hand-over


@pytest.mark.parametrize("how", ["parts", "worker hand-over"])
@pytest.mark.parametrize("kind", ["labelled", "built"])
def test_a_batch_rebuilt_from_its_parts_splits_into_the_original_graphs(graphs, kind, how):
    originals = graphs[0] if kind == "labelled" else graphs[1]
    batch = rebuilt(originals, how)
    assert type(batch) is type(Batch.from_data_list(originals))
    assert batch.num_graphs == len(originals)
    for graph, original in zip(batch.to_data_list(), originals, strict=True):
        assert_same_graph(graph, original)
    for i in (0, len(originals) - 1):
        assert_same_graph(batch.get_example(i), originals[i])
    for graph, original in zip(batch.index_select([2, 0]), [originals[2], originals[0]], strict=True):
        assert_same_graph(graph, original)
