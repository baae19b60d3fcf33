"""Shared fixtures: small models and structures of every periodicity."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ase import Atoms

import sevenomni
from sevenomni.testing.structures import rattled, structures, triclinic_crystal  # noqa: F401 (fixtures' data)

TESTS = Path(__file__).resolve().parent  # unit/<package>/ and integration/ test files, shared helpers here
REPO = TESTS.parent
ELEMENTS = ["H", "C", "N", "O", "Si"]


def make_model(tasks=("crystal", "molecule"), dtype="float64", seed=0, **hyperparameters):
    """A small random model whose task embeddings are non-zero, so channels differ."""
    torch.manual_seed(seed)
    settings = dict(channels=8, lmax=2, num_layers=2, cutoff=4.0, radial_mlp=[16], avg_num_neighbors=6.0)
    settings.update(hyperparameters)
    model = sevenomni.build_model(list(tasks), ELEMENTS, dtype=dtype, **settings)
    with torch.no_grad():
        for _, parameter in model.task_embedding_parameters():
            parameter.normal_(0.0, 0.5)
        model.energy_shift.weight.normal_(0.0, 1.0)
    return model.eval()


@pytest.fixture(params=list(structures()))
def any_structure(request) -> Atoms:
    return structures()[request.param]


@pytest.fixture(scope="session")
def model64():
    return make_model()
