"""E is invariant and F equivariant under rotation, inversion, translation and permutation."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from conftest import make_model, structures
from sevenomni import predict

TOLERANCE = {"float64": 1e-8, "float32": 1e-4}


def evaluate(model, atoms, task="crystal"):
    (result,) = predict(model, [atoms], task)
    return result


def transformed(atoms, matrix, translation=np.zeros(3)):
    moved = atoms.copy()
    moved.positions = atoms.positions @ matrix.T + translation
    moved.cell = atoms.cell.array @ matrix.T
    return moved


@pytest.fixture(scope="module", params=["float64", "float32"])
def model(request):
    return make_model(dtype=request.param)


@pytest.mark.parametrize("name", list(structures()))
def test_rotation_translation(model, name):
    atoms = structures()[name]
    tol = TOLERANCE[model.config.dtype]
    rotation = Rotation.random(random_state=3).as_matrix()
    reference = evaluate(model, atoms)
    moved = evaluate(model, transformed(atoms, rotation, np.array([1.3, -2.1, 0.7])))
    n = len(atoms)
    assert abs(moved["energy"] - reference["energy"]) / n <= tol
    np.testing.assert_allclose(moved["forces"], reference["forces"] @ rotation.T, atol=tol * 10)
    if "stress" in reference:
        from ase.stress import voigt_6_to_full_3x3_stress as full

        np.testing.assert_allclose(
            full(moved["stress"]), rotation @ full(reference["stress"]) @ rotation.T, atol=tol
        )


@pytest.mark.parametrize("name", list(structures()))
def test_inversion_o3(model, name):
    atoms = structures()[name]
    tol = TOLERANCE[model.config.dtype]
    reference = evaluate(model, atoms)
    inverted = evaluate(model, transformed(atoms, -np.eye(3)))
    assert abs(inverted["energy"] - reference["energy"]) / len(atoms) <= tol
    np.testing.assert_allclose(inverted["forces"], -reference["forces"], atol=tol * 10)


def test_so3_model_is_rotation_invariant_but_sees_chirality():
    # Three layers: the second builds cross products (1e x 1e -> 1e), the last a triple product.
    model = make_model(parity="so3", num_layers=3)
    atoms = structures()["molecule"]
    rotation = Rotation.random(random_state=5).as_matrix()
    reference = evaluate(model, atoms)
    assert abs(evaluate(model, transformed(atoms, rotation))["energy"] - reference["energy"]) < 1e-8
    mirrored = evaluate(model, transformed(atoms, np.diag([1.0, 1.0, -1.0])))
    assert abs(mirrored["energy"] - reference["energy"]) > 1e-6


@pytest.mark.parametrize("name", list(structures()))
def test_permutation(model, name):
    atoms = structures()[name]
    tol = TOLERANCE[model.config.dtype]
    order = np.random.default_rng(1).permutation(len(atoms))
    reference = evaluate(model, atoms)
    permuted = evaluate(model, atoms[order])
    assert abs(permuted["energy"] - reference["energy"]) / len(atoms) <= tol
    np.testing.assert_allclose(permuted["forces"], reference["forces"][order], atol=tol * 10)
    np.testing.assert_allclose(permuted["energies"], reference["energies"][order], atol=tol * 10)


def test_periodic_image_choice_does_not_matter(model):
    atoms = structures()["triclinic"]
    wrapped = atoms.copy()
    wrapped.positions += atoms.cell.array[0] * 2 - atoms.cell.array[2]
    tol = TOLERANCE[model.config.dtype]
    a, b = evaluate(model, atoms), evaluate(model, wrapped)
    assert abs(a["energy"] - b["energy"]) / len(atoms) <= tol
    np.testing.assert_allclose(a["forces"], b["forces"], atol=tol * 10)
