"""Physics every model must obey, as a mixin any model configuration or backend can run.

A test class inherits :class:`ModelPhysics` and provides a ``model`` fixture (an eval-mode model
with tasks ``crystal`` and ``molecule``, the elements H, C, O and Si, and non-zero θT, e.g. from
``tests/conftest.py``'s ``make_model``); a variant of the architecture reuses it the same way:

    from sevenomni.testing.physics import ModelPhysics

    class TestMyConfiguration(ModelPhysics):
        @pytest.fixture(scope="class")
        def model(self):
            return make_model(lmax=3)

It then checks, on a triclinic crystal, a diamond cell, a molecule and a slab: E invariant and
F, σ equivariant under rotation and translation; inversion (O(3) models); permutation of atoms;
the choice of periodic image; F = −∂E/∂r and σ = ∂E/∂ε/V by central finite differences; and
that the common channel is the model with θT = 0.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase.stress import full_3x3_to_voigt_6_stress, voigt_6_to_full_3x3_stress
from scipy.spatial.transform import Rotation

from sevenomni.calculators.prediction import predict
from sevenomni.testing.structures import structures

TOLERANCE = {"float64": 1e-8, "float32": 1e-4}  # per-atom energy; forces get 10x, stress 1x
STRUCTURES = list(structures())
PERIODIC = ["triclinic", "diamond", "slab"]


def evaluate(model, atoms, task="crystal", shift_task=None):
    (result,) = predict(model, [atoms], task, shift_task)
    return result


def transformed(atoms, matrix, translation=np.zeros(3)):
    moved = atoms.copy()
    moved.positions = atoms.positions @ matrix.T + translation
    moved.cell = atoms.cell.array @ matrix.T
    return moved


class ModelPhysics:
    """Symmetry, derivative and common-channel tests for the ``model`` fixture of a subclass."""

    finite_difference_step = 1e-5  # Å; a float32 model needs a wider step (and looser tolerance)
    finite_difference_tolerance = 1e-6

    def tolerance(self, model) -> float:
        return TOLERANCE[model.config.dtype]

    @pytest.mark.parametrize("name", STRUCTURES)
    def test_rotation_and_translation(self, model, name):
        atoms = structures()[name]
        tol = self.tolerance(model)
        rotation = Rotation.random(random_state=3).as_matrix()
        reference = evaluate(model, atoms)
        moved = evaluate(model, transformed(atoms, rotation, np.array([1.3, -2.1, 0.7])))
        assert abs(moved["energy"] - reference["energy"]) / len(atoms) <= tol
        np.testing.assert_allclose(moved["forces"], reference["forces"] @ rotation.T, atol=tol * 10)
        if "stress" in reference:
            expected = rotation @ voigt_6_to_full_3x3_stress(reference["stress"]) @ rotation.T
            np.testing.assert_allclose(voigt_6_to_full_3x3_stress(moved["stress"]), expected, atol=tol)

    @pytest.mark.parametrize("name", STRUCTURES)
    def test_inversion(self, model, name):
        if model.config.parity != "o3":
            pytest.skip("an SO(3) model may tell mirror images apart")
        atoms = structures()[name]
        tol = self.tolerance(model)
        reference = evaluate(model, atoms)
        inverted = evaluate(model, transformed(atoms, -np.eye(3)))
        assert abs(inverted["energy"] - reference["energy"]) / len(atoms) <= tol
        np.testing.assert_allclose(inverted["forces"], -reference["forces"], atol=tol * 10)

    @pytest.mark.parametrize("name", STRUCTURES)
    def test_permutation(self, model, name):
        atoms = structures()[name]
        tol = self.tolerance(model)
        order = np.random.default_rng(1).permutation(len(atoms))
        reference = evaluate(model, atoms)
        permuted = evaluate(model, atoms[order])
        assert abs(permuted["energy"] - reference["energy"]) / len(atoms) <= tol
        np.testing.assert_allclose(permuted["forces"], reference["forces"][order], atol=tol * 10)
        np.testing.assert_allclose(permuted["energies"], reference["energies"][order], atol=tol * 10)

    def test_periodic_image_choice_does_not_matter(self, model):
        atoms = structures()["triclinic"]
        wrapped = atoms.copy()
        wrapped.positions += atoms.cell.array[0] * 2 - atoms.cell.array[2]
        tol = self.tolerance(model)
        a, b = evaluate(model, atoms), evaluate(model, wrapped)
        assert abs(a["energy"] - b["energy"]) / len(atoms) <= tol
        np.testing.assert_allclose(a["forces"], b["forces"], atol=tol * 10)

    @pytest.mark.parametrize("name", STRUCTURES)
    def test_forces_are_minus_energy_gradient(self, model, name):
        atoms = structures()[name]
        result = evaluate(model, atoms, "molecule")
        h, tol = self.finite_difference_step, self.finite_difference_tolerance
        for atom in range(min(len(atoms), 4)):
            for axis in range(3):
                plus, minus = atoms.copy(), atoms.copy()
                plus.positions[atom, axis] += h
                minus.positions[atom, axis] -= h
                numeric = -(evaluate(model, plus, "molecule")["energy"] - evaluate(model, minus, "molecule")["energy"])
                assert result["forces"][atom, axis] == pytest.approx(numeric / (2 * h), abs=tol, rel=tol)

    @pytest.mark.parametrize("name", PERIODIC)
    def test_stress_is_strain_derivative(self, model, name):
        atoms = structures()[name]
        result = evaluate(model, atoms, "molecule")
        h = self.finite_difference_step / 10
        stress = np.zeros((3, 3))
        for i in range(3):
            for j in range(3):
                values = []
                for sign in (1, -1):
                    strain = np.eye(3)
                    strain[i, j] += sign * h
                    strained = atoms.copy()
                    strained.set_cell(atoms.cell.array @ strain, scale_atoms=True)
                    values.append(evaluate(model, strained, "molecule")["energy"])
                stress[i, j] = (values[0] - values[1]) / (2 * h) / atoms.get_volume()
        expected = full_3x3_to_voigt_6_stress(0.5 * (stress + stress.T))
        np.testing.assert_allclose(result["stress"], expected, atol=self.finite_difference_tolerance / 10)

    def test_molecule_has_no_stress_and_finite_forces(self, model):
        result = evaluate(model, structures()["molecule"], "molecule")
        assert "stress" not in result
        assert np.isfinite(result["forces"]).all()

    def test_common_channel_is_the_model_without_task_embeddings(self, model):
        zeroed = copy.deepcopy(model)
        with torch.no_grad():
            for _, parameter in zeroed.task_embedding_parameters():
                parameter.zero_()
        for name in STRUCTURES:
            atoms = structures()[name]
            for task in model.tasks:
                common = evaluate(model, atoms, "common", task)
                assert common["energy"] == pytest.approx(evaluate(zeroed, atoms, task)["energy"], abs=1e-6)
                np.testing.assert_allclose(common["forces"], evaluate(zeroed, atoms, task)["forces"], atol=1e-6)
