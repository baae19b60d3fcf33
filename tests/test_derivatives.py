"""Forces and stress equal central finite differences of the energy."""

import numpy as np
import pytest

from conftest import make_model, structures
from sevenomni import predict


def energy(model, atoms):
    (result,) = predict(model, [atoms], "molecule")
    return result["energy"]


@pytest.fixture(scope="module")
def model():
    return make_model(envelope="xplor", xplor_on=3.0)


@pytest.mark.parametrize("name", list(structures()))
@pytest.mark.parametrize("envelope", ["polynomial", "xplor"])
def test_forces_are_minus_energy_gradient(name, envelope):
    model = make_model(envelope=envelope, xplor_on=3.0 if envelope == "xplor" else None)
    atoms = structures()[name]
    (result,) = predict(model, [atoms], "molecule")
    h = 1e-5
    for atom in range(min(len(atoms), 4)):
        for axis in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[atom, axis] += h
            minus.positions[atom, axis] -= h
            numeric = -(energy(model, plus) - energy(model, minus)) / (2 * h)
            assert result["forces"][atom, axis] == pytest.approx(numeric, abs=1e-6, rel=1e-6)


@pytest.mark.parametrize("name", ["triclinic", "diamond", "slab"])
def test_stress_is_strain_derivative(model, name):
    atoms = structures()[name]
    (result,) = predict(model, [atoms], "molecule")
    stress = np.zeros((3, 3))
    h = 1e-6
    for i in range(3):
        for j in range(3):
            values = []
            for sign in (1, -1):
                strain = np.eye(3)
                strain[i, j] += sign * h
                strained = atoms.copy()
                strained.set_cell(atoms.cell.array @ strain, scale_atoms=True)
                values.append(energy(model, strained))
            stress[i, j] = (values[0] - values[1]) / (2 * h) / atoms.get_volume()
    stress = 0.5 * (stress + stress.T)
    from ase.stress import full_3x3_to_voigt_6_stress

    np.testing.assert_allclose(result["stress"], full_3x3_to_voigt_6_stress(stress), atol=1e-7)


def test_molecule_has_no_stress_and_no_division_by_zero(model):
    (result,) = predict(model, [structures()["molecule"]], "molecule")
    assert "stress" not in result
    assert np.isfinite(result["forces"]).all()
