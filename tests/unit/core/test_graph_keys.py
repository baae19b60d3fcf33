"""The graph-field registry (sevenomni.core.keys) against real graphs, batches and the model's forward."""

from __future__ import annotations

import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list as ase_neighbor_list
from conftest import make_model, structures
from data_helpers import records

from sevenomni.core import keys
from sevenomni.core.keys import FIELDS, GRAPH_FIELDS, TASK, GraphField
from sevenomni.data.dataset import LMDBDataset
from sevenomni.data.graph import atoms_to_graph, collate
from sevenomni.data.store import write_store

CUTOFF = 3.0


def constants() -> dict[str, str]:
    """The module's field-name constants: its public upper-case strings."""
    return {name: value for name, value in vars(keys).items() if name.isupper() and isinstance(value, str)}


def fields_from(*sources: str) -> set[str]:
    return {field.name for field in FIELDS if field.source in sources}


def edge_count(numbers, positions, cell, pbc) -> int:
    """Edges within CUTOFF counted by ASE, independently of the graph builder."""
    return len(ase_neighbor_list("i", Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc), CUTOFF))


def declared_shape(field: GraphField, graphs: int, atoms: int, edges: int) -> tuple[int, ...]:
    sizes = {"graphs": graphs, "graphs+1": graphs + 1, "atoms": atoms, "edges": edges}
    return tuple(sizes[size] if isinstance(size, str) else size for size in field.shape)


def check_fields(graph, names: set[str], graphs: int, atoms: int, edges: int) -> None:
    """``graph`` has exactly ``names`` (besides torch_geometric's num_nodes), each of its declared shape and dtype."""
    assert set(graph.keys()) - {"num_nodes"} == names
    for name in names:
        field, value = GRAPH_FIELDS[name], graph[name]
        expected = declared_shape(field, graphs, atoms, edges)
        assert tuple(value.shape) == expected, (name, tuple(value.shape), expected)
        assert value.dtype == getattr(torch, field.dtype), (name, value.dtype, field.dtype)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Items of a store (labels missing in some) and their records."""
    path = tmp_path_factory.mktemp("keys") / "store"
    items = records(8, seed=3)
    items[2].energy, items[3].forces = None, None
    write_store(items, path)
    dataset = LMDBDataset(path, CUTOFF, task_index=1, database_index=0)
    return [dataset[i] for i in range(len(items))], items


def test_the_registry_names_each_field_once_and_every_constant_is_a_field():
    assert len(GRAPH_FIELDS) == len(FIELDS), "a name is registered twice"
    assert all(name == field.name for name, field in GRAPH_FIELDS.items())
    names = constants()
    assert len(set(names.values())) == len(names), "two constants share a name"
    assert set(names.values()) == set(GRAPH_FIELDS)
    assert {field.per for field in FIELDS} == {"graph", "node", "edge"}


def test_a_field_must_name_one_size():
    with pytest.raises(ValueError, match="one size"):
        GraphField("twice", ("atoms", "edges"), "float64", "graph", "")
    with pytest.raises(ValueError, match="one size"):
        GraphField("fixed", (3, 3), "float64", "graph", "")


@pytest.mark.parametrize("name", list(structures()))
def test_a_built_graph_has_its_fields_as_declared(name):
    atoms = structures()[name]
    graph = atoms_to_graph(atoms, CUTOFF)
    edges = edge_count(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc)
    check_fields(graph, fields_from("graph"), 1, len(atoms), edges)


def test_labelled_items_and_their_batch_have_their_fields_as_declared(labelled):
    graphs, items = labelled
    edges = [edge_count(r.numbers, r.positions, r.cell, r.pbc) for r in items]
    for graph, record, count in zip(graphs, items, edges):
        check_fields(graph, fields_from("graph", "dataset"), 1, len(record.numbers), count)
    batch = collate(graphs)
    atoms = sum(len(record.numbers) for record in items)
    check_fields(batch, fields_from("graph", "dataset", "batch"), len(items), atoms, sum(edges))


class Recording:
    """A graph that notes the name of every attribute read from it."""

    def __init__(self, graph) -> None:
        self._graph, self.read = graph, set()

    def __getattr__(self, name: str):
        self.read.add(name)
        return getattr(self._graph, name)


@pytest.mark.parametrize("attach_species", [False, True])
def test_every_field_the_model_forward_reads_or_returns_is_registered(attach_species):
    model = make_model()
    items = list(structures().values())
    graphs = [atoms_to_graph(atoms, model.cutoff) for atoms in items]
    for graph in graphs:
        graph[TASK] = torch.tensor([0])
        if attach_species:
            model.attach_species(graph)
    batch = collate(graphs)
    recording = Recording(batch)
    out = model(recording)
    assert recording.read <= set(GRAPH_FIELDS), sorted(recording.read - set(GRAPH_FIELDS))
    assert {keys.POS, keys.CELL, keys.EDGE_INDEX, keys.CELL_SHIFT, keys.BATCH, TASK} <= recording.read
    assert set(out) <= set(GRAPH_FIELDS), sorted(set(out) - set(GRAPH_FIELDS))
    sizes = len(items), sum(len(atoms) for atoms in items), batch.edge_index.shape[1]
    if attach_species:
        check_fields(batch, fields_from("graph", "batch", "model") | {TASK}, *sizes)
    for name, value in out.items():
        assert tuple(value.shape) == declared_shape(GRAPH_FIELDS[name], *sizes), name
        assert value.dtype == model.dtype, name
