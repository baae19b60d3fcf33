"""`sevenomni predict`: unlabelled structures through the model, written to extxyz (issue 25, friction 3)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.io import read, write
from conftest import make_model

from sevenomni import SevenOmniCalculator, save_checkpoint
from sevenomni.cli import main
from sevenomni.data.ingest import ingest

torch.set_num_threads(1)


def unlabelled(path):
    """Two periodic crystals and two molecules, no labels."""
    silicon = bulk("Si", "diamond", a=5.43) * (1, 1, 2)
    silicon.rattle(0.05, seed=1)
    carbide = bulk("SiC", "zincblende", a=4.36)
    carbide.rattle(0.05, seed=2)
    structures = [silicon, molecule("CH4"), carbide, molecule("H2O")]
    write(path, structures, format="extxyz")
    return read(path, ":")


@pytest.fixture
def model_file(tmp_path):
    model = make_model()
    save_checkpoint(model, tmp_path / "model.pt")
    return model, tmp_path / "model.pt"


def run_predict(model_path, data, out, *options):
    return main(["predict", str(model_path), str(data), "-o", str(out), "--device", "cpu", *options])


def test_predictions_equal_the_calculators_and_read_back(tmp_path, model_file, capsys):
    model, model_path = model_file
    structures = unlabelled(tmp_path / "plain.extxyz")
    assert run_predict(model_path, tmp_path / "plain.extxyz", tmp_path / "out.extxyz", "--task", "molecule",
                       "--batch-size", "3") == 0
    assert "4 structures" in capsys.readouterr().out
    written = read(tmp_path / "out.extxyz", ":")
    assert len(written) == len(structures)
    calculator = SevenOmniCalculator(model, task="molecule", device="cpu")
    for atoms, predicted in zip(structures, written):
        atoms.calc = calculator
        np.testing.assert_allclose(predicted.positions, atoms.positions)
        assert predicted.info["sevenomni_energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-8)
        np.testing.assert_allclose(predicted.arrays["sevenomni_forces"], atoms.get_forces(), atol=1e-8)
        if atoms.pbc.any():
            np.testing.assert_allclose(predicted.info["sevenomni_stress"], atoms.get_stress(), atol=1e-8)
        else:
            assert "sevenomni_stress" not in predicted.info


def test_common_and_all_write_every_channel(tmp_path, model_file):
    model, model_path = model_file
    structures = unlabelled(tmp_path / "plain.extxyz")
    assert run_predict(model_path, tmp_path / "plain.extxyz", tmp_path / "all.extxyz", "--task", "all",
                       "--shift-task", "crystal") == 0
    written = read(tmp_path / "all.extxyz", ":")
    for channel, shift in (("crystal", None), ("molecule", None), ("common", "crystal")):
        calculator = SevenOmniCalculator(model, task=channel, shift_task=shift, device="cpu")
        for atoms, predicted in zip(structures, written):
            atoms.calc = calculator
            assert predicted.info[f"sevenomni_{channel}_energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-8)
            np.testing.assert_allclose(predicted.arrays[f"sevenomni_{channel}_forces"], atoms.get_forces(), atol=1e-8)
            assert (f"sevenomni_{channel}_stress" in predicted.info) == bool(atoms.pbc.any())
    # without a shift task, `all` is every task (the common channel's shifts are unknown)
    assert run_predict(model_path, tmp_path / "plain.extxyz", tmp_path / "tasks.extxyz", "--task", "all") == 0
    info = read(tmp_path / "tasks.extxyz", "0").info
    keys = {key for key in info if key.startswith("sevenomni_") and key.endswith("_energy")}
    assert keys == {"sevenomni_crystal_energy", "sevenomni_molecule_energy"}
    assert run_predict(model_path, tmp_path / "plain.extxyz", tmp_path / "common.extxyz", "--task", "COMMON",
                       "--shift-task", "molecule") == 0
    calculator = SevenOmniCalculator(model, task="common", shift_task="molecule", device="cpu")
    for atoms, predicted in zip(structures, read(tmp_path / "common.extxyz", ":"), strict=True):
        atoms.calc = calculator
        assert predicted.info["sevenomni_energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-8)


def test_a_store_is_predicted_like_its_file(tmp_path, model_file):
    _, model_path = model_file
    unlabelled(tmp_path / "plain.extxyz")
    ingest(tmp_path / "plain.extxyz", tmp_path / "store", require_energy=False)
    assert run_predict(model_path, tmp_path / "store", tmp_path / "from_store.extxyz", "--task", "crystal") == 0
    assert run_predict(model_path, tmp_path / "plain.extxyz", tmp_path / "from_file.extxyz", "--task", "crystal") == 0
    for a, b in zip(read(tmp_path / "from_store.extxyz", ":"), read(tmp_path / "from_file.extxyz", ":"), strict=True):
        assert a.info["sevenomni_energy"] == pytest.approx(b.info["sevenomni_energy"], abs=1e-8)


@pytest.mark.parametrize(
    ("structure", "message"),
    [
        (Atoms("SiFe", positions=[[0, 0, 0], [2.0, 0, 0]]), r"structure 2 \(FeSi\): element\(s\) \['Fe'\] not in"),
        (Atoms("Si2", positions=[[0, 0, 0], [20.0, 0, 0]]), r"structure 2 \(Si2\): no two atoms within the model's cutoff"),
    ],
)
def test_bad_structures_are_errors_naming_their_index(tmp_path, model_file, capsys, structure, message):
    _, model_path = model_file
    write(tmp_path / "bad.extxyz", [molecule("CH4"), molecule("H2O"), structure], format="extxyz")
    assert run_predict(model_path, tmp_path / "bad.extxyz", tmp_path / "out.extxyz", "--task", "crystal") == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out.extxyz").exists()  # nothing half-written


def test_an_isolated_atom_is_predicted(tmp_path, model_file):
    model, model_path = model_file
    write(tmp_path / "atom.extxyz", [Atoms("O")], format="extxyz")
    assert run_predict(model_path, tmp_path / "atom.extxyz", tmp_path / "out.extxyz", "--task", "crystal") == 0
    predicted, atom = read(tmp_path / "out.extxyz"), Atoms("O")
    atom.calc = SevenOmniCalculator(model, task="crystal", device="cpu")
    assert predicted.info["sevenomni_energy"] == pytest.approx(atom.get_potential_energy(), abs=1e-8)


def test_a_bad_file_names_the_structure(tmp_path, model_file, capsys):
    _, model_path = model_file
    write(tmp_path / "plain.extxyz", [molecule("CH4"), molecule("H2O")], format="extxyz")
    text = (tmp_path / "plain.extxyz").read_text().splitlines()
    (tmp_path / "cut.extxyz").write_text("\n".join(text[:-2]) + "\n")  # the second structure truncated
    assert run_predict(model_path, tmp_path / "cut.extxyz", tmp_path / "out.extxyz", "--task", "crystal") == 2
    assert "cut.extxyz: cannot read structure 1" in capsys.readouterr().err
    assert run_predict(model_path, tmp_path / "none.extxyz", tmp_path / "out.extxyz", "--task", "crystal") == 2
    assert "none.extxyz: No such file or directory" in capsys.readouterr().err


def test_eval_of_unlabelled_structures_points_to_predict(tmp_path, model_file, capsys):
    _, model_path = model_file
    unlabelled(tmp_path / "plain.extxyz")
    for options in ([], ["--skip-bad"]):
        argv = ["eval", str(model_path), str(tmp_path / "plain.extxyz"), "--out", str(tmp_path / "eval"),
                "--workers", "0", "--cache-dir", str(tmp_path / "cache"), "--quiet", *options]
        assert main(argv) == 2
        error = capsys.readouterr().err
        assert "missing_energy" in error and f"sevenomni predict MODEL {tmp_path / 'plain.extxyz'} --task" in error
    ingest(tmp_path / "plain.extxyz", tmp_path / "store", require_energy=False)  # the old workaround
    argv = ["eval", str(model_path), str(tmp_path / "store"), "--out", str(tmp_path / "eval"), "--quiet"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "store: no energy or force labels" in error and f"sevenomni predict MODEL {tmp_path / 'store'}" in error
