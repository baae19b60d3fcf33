"""Shared fixtures: small models and structures of every periodicity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule

import sevenomni

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


def triclinic_crystal(seed: int = 0) -> Atoms:
    """A small skewed SiC-like cell, smaller than the cutoff along one axis."""
    rng = np.random.default_rng(seed)
    cell = np.array([[3.1, 0.0, 0.0], [0.9, 2.9, 0.0], [0.4, 0.7, 3.3]])
    atoms = Atoms("SiCSiC", scaled_positions=rng.random((4, 3)), cell=cell, pbc=True)
    return atoms


def rattled(atoms: Atoms, amplitude: float = 0.05, seed: int = 0) -> Atoms:
    atoms = atoms.copy()
    atoms.rattle(amplitude, seed=seed)
    return atoms


def structures() -> dict[str, Atoms]:
    slab = fcc111("Al", (2, 2, 2), vacuum=5.0)
    slab.set_chemical_symbols(["Si", "C"] * 4)
    slab.pbc = [True, True, False]
    return {
        "triclinic": triclinic_crystal(),
        "diamond": rattled(bulk("C", "diamond", a=3.57), 0.05),
        "molecule": rattled(molecule("CH3CH2OH"), 0.05),
        "slab": rattled(slab, 0.05),
    }


@pytest.fixture(params=list(structures()))
def any_structure(request) -> Atoms:
    return structures()[request.param]


@pytest.fixture(scope="session")
def model64():
    return make_model()
