"""torch.compile of the network: the same energies, forces and stress as eager; no double backward."""

import numpy as np
import pytest
import torch
from conftest import make_model, structures

from sevenomni import SevenOmniCalculator
from sevenomni.data.graph import atoms_to_graph, collate
from sevenomni.nn.compiled import DOUBLE_BACKWARD_FALLBACK


def graph_of(model, atoms):
    graph = collate([atoms_to_graph(atoms, model.cutoff)])
    graph.task = torch.tensor([1])
    return graph


@pytest.fixture(scope="module")
def tiny():
    """Small enough to compile in seconds (on one thread, the fastest for it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield make_model(lmax=1, num_layers=1, channels=4, radial_mlp=[8], tp_backend="e3nn")
    torch.set_num_threads(threads)


def test_compiled_inference_equals_eager_across_sizes(tiny):
    eager = {name: tiny(graph_of(tiny, structures()[name]), create_graph=False) for name in ("triclinic", "slab")}
    tiny.set_compiled(True)
    try:
        for name, expected in eager.items():  # the second size reuses the dynamic-shape graph
            out = tiny(graph_of(tiny, structures()[name]), create_graph=False)
            for key in ("energy", "forces", "stress"):
                torch.testing.assert_close(out[key], expected[key], rtol=1e-9, atol=1e-11)
    finally:
        tiny.set_compiled(False)


def test_force_training_falls_back_to_eager_with_a_message(tiny):
    graph = graph_of(tiny, structures()["triclinic"])
    expected = tiny(graph, create_graph=True)["forces"]
    tiny.set_compiled(True)
    try:
        with pytest.warns(UserWarning, match="double backward"):
            forces = tiny(graph, create_graph=True)["forces"]
        forces.square().sum().backward()  # differentiable again: the eager network ran
    finally:
        tiny.set_compiled(False)
    torch.testing.assert_close(forces, expected, rtol=0, atol=0)
    assert "torch.compile does not support" in DOUBLE_BACKWARD_FALLBACK


@pytest.mark.slow
def test_compiled_calculator_matches_eager(tiny):
    atoms = structures()["diamond"]
    eager = SevenOmniCalculator(tiny, task="molecule").get_forces(atoms)
    compiled = SevenOmniCalculator(tiny, task="molecule", compile=True)
    assert not tiny.compiled and compiled.model.compiled
    np.testing.assert_allclose(compiled.get_forces(atoms), eager, rtol=1e-9, atol=1e-11)
