"""Energy references (E0s): fitted, taken from isolated-atom frames, or given per element."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from ase import Atoms
from ase.io import read, write
from training_helpers import make_run

from sevenomni.train.config import ConfigError, load_config
from sevenomni.train.trainer import Trainer

E0 = {"H": -10.5, "C": -48.25, "N": -71.0, "O": -102.75}


def isolated_atom(symbol: str, energy: float, tagged: bool) -> Atoms:
    """One atom: tagged config_type=IsolatedAtom in a periodic box, or untagged without a cell."""
    atoms = Atoms(symbol, positions=[[0.0, 0.0, 0.0]], cell=[20.0] * 3 if tagged else None, pbc=tagged)
    atoms.info["REF_energy"] = energy
    if tagged:
        atoms.info["config_type"] = "isolatedATOM"
    atoms.arrays["REF_forces"] = np.zeros((1, 3))
    return atoms


def molecule_run(tmp_path, references="fit", isolated: dict[str, float] | None = None) -> dict:
    """A one-task run on 16 molecules (H, C, N, O), the isolated atoms mixed in among them."""
    raw = make_run(tmp_path, overrides={"stages": [{"name": "m", "databases": ["molecule"], "steps": 1}]})
    raw["data"]["databases"] = raw["data"]["databases"][1:]
    raw["data"]["databases"][0]["energy_references"] = references
    raw["train"]["optimizer"]["lr"] = 1e-12  # a step that leaves the shifts where they were set
    path = raw["data"]["databases"][0]["path"]
    structures = read(path, ":")
    for k, (symbol, energy) in enumerate((isolated or {}).items()):
        structures.insert(3 * k + 1, isolated_atom(symbol, energy, tagged=k % 2 == 0))
    write(path, structures, format="extxyz")
    return raw


def run_and_shifts(raw: dict, caplog) -> tuple[Trainer, dict[str, float]]:
    trainer = Trainer(load_config(raw=raw))
    with caplog.at_level(logging.INFO, logger="sevenomni"):
        model = trainer.run()
    row = model.energy_shift.weight[0].detach()
    return trainer, {element: float(row[i]) for i, element in enumerate(model.elements)}


def one_atom_items(dataset) -> int:
    return 0 if dataset is None else int(np.sum(dataset.atom_counts == 1))


def test_isolated_atoms_are_the_shifts_and_never_train_or_validate(tmp_path, caplog):
    trainer, shifts = run_and_shifts(molecule_run(tmp_path, "isolated_atoms", E0), caplog)
    assert shifts == pytest.approx(E0, abs=1e-6)
    (database,) = trainer.databases
    assert len(database.isolated) == 4 and database.isolated.energies == pytest.approx(E0)
    assert len(database.train) + len(database.valid) == 16
    assert one_atom_items(database.train) == one_atom_items(database.valid) == 0
    assert "4 isolated-atom frame(s) taken as energy references" in caplog.text
    assert "energy shifts from isolated-atom frames" in caplog.text


def test_given_references_are_the_shifts(tmp_path, caplog):
    _, shifts = run_and_shifts(molecule_run(tmp_path, dict(E0)), caplog)
    assert shifts == pytest.approx(E0, abs=1e-6)


def test_isolated_atoms_in_a_fitted_task_are_left_out_with_a_notice(tmp_path, caplog):
    trainer, shifts = run_and_shifts(molecule_run(tmp_path, "fit", {"H": 1000.0, "O": 1000.0}), caplog)
    (database,) = trainer.databases
    assert len(database.train) + len(database.valid) == 16 and one_atom_items(database.train) == 0
    assert "2 isolated-atom frame(s) left out of training (energy_references: fit)" in caplog.text
    assert shifts["H"] < 0 and shifts["O"] < 0  # fitted on the molecules, not pulled to the +1000 eV atoms


def test_a_missing_isolated_atom_names_the_element(tmp_path):
    without_nitrogen = {k: v for k, v in E0.items() if k != "N"}
    with pytest.raises(ValueError, match=r"element\(s\) \['N'\] of its data have no isolated-atom frame"):
        Trainer(load_config(raw=molecule_run(tmp_path, "isolated_atoms", without_nitrogen))).run()
    with pytest.raises(ValueError, match=r"\['N'\] of its data have no value in energy_references"):
        Trainer(load_config(raw=molecule_run(tmp_path, without_nitrogen))).run()  # the failed run left nothing behind


def test_energy_reference_settings_are_validated(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown element symbol\(s\) \['Xx'\]"):
        load_config(raw=molecule_run(tmp_path, {"H": -1.0, "Xx": 2.0}))
    with pytest.raises(ConfigError, match="energy_references"):
        load_config(raw=molecule_run(tmp_path, "estimated"))
    raw = make_run(tmp_path)
    raw["data"]["databases"][1]["task"] = "gfn1"
    raw["data"]["databases"][1]["energy_references"] = "isolated_atoms"
    with pytest.raises(ConfigError, match="'crystal' and 'molecule' share task 'gfn1' but not its energy_references"):
        load_config(raw=raw)
