"""DFT-D3 on top of a model: energies, forces and stress are the model's plus the dftd3 package's own."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from conftest import make_model

from sevenomni import SevenOmniCalculator
from sevenomni.calculators.dispersion import DispersionError

pytest.importorskip("dftd3")
from dftd3.ase import DFTD3  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return make_model()


def evaluate(atoms, calculator, stress: bool) -> dict:
    atoms = atoms.copy()
    atoms.calc = calculator
    result = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if stress:
        result["stress"] = atoms.get_stress()
    return result


@pytest.mark.parametrize(
    "settings,functional,damping",
    [(True, "PBE", "d3bj"), ({"functional": "B3LYP", "damping": "d3zero"}, "B3LYP", "d3zero")],
    ids=["default-pbe-bj", "b3lyp-zero"],
)
def test_model_plus_d3_is_the_sum_of_both(model, settings, functional, damping):
    crystal = bulk("Si", "diamond", a=5.43).repeat((2, 1, 1))
    crystal.numbers[1] = 6
    crystal.rattle(0.05, seed=0)
    cases = {"crystal": (crystal, "crystal", True), "molecule": (molecule("CH3CH2OH"), "molecule", False)}
    for label, (atoms, task, stress) in cases.items():
        alone = evaluate(atoms, SevenOmniCalculator(model, task=task, device="cpu"), stress)
        d3 = evaluate(atoms, DFTD3(method=functional, damping=damping), stress)
        both = evaluate(atoms, SevenOmniCalculator(model, task=task, device="cpu", d3=settings), stress)
        assert abs(d3["energy"]) > 1e-3, "D3 must contribute for the test to mean anything"
        for key in alone:
            np.testing.assert_allclose(both[key], np.asarray(alone[key]) + d3[key], rtol=0, atol=1e-10, err_msg=label)


def test_per_atom_energies_are_not_reported_with_d3(model):
    atoms = molecule("H2O")
    atoms.calc = SevenOmniCalculator(model, task="molecule", device="cpu", d3=True)
    atoms.get_potential_energy()
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_potential_energies()
    atoms.calc = SevenOmniCalculator(model, task="molecule", device="cpu", d3=False)
    assert atoms.get_potential_energies().shape == (3,)


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"functional": "PBE", "dampnig": "d3bj"}, r"unknown key\(s\) \['dampnig'\]"),
        ({"damping": "d4"}, "damping must be one of"),
        ({"functional": "no-such-functional"}, "no d3bj parameters for functional 'no-such-functional'"),
        ("yes", "must be True, False, None or a dict"),
    ],
)
def test_bad_d3_settings_name_what_is_wrong(model, settings, message):
    with pytest.raises(DispersionError, match=message):
        SevenOmniCalculator(model, task="molecule", device="cpu", d3=settings)


def test_missing_dftd3_package_is_a_clear_error(model, monkeypatch):
    monkeypatch.setitem(sys.modules, "dftd3.ase", None)
    with pytest.raises(DispersionError, match="pip install dftd3"):
        SevenOmniCalculator(model, task="molecule", device="cpu", d3=True)
