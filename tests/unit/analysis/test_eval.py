"""`sevenomni eval`: agreement with a calculator loop, the softening scale, outputs and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from analysis_helpers import tiny_model
from ase.io import read, write
from training_helpers import TINY

from sevenomni import SevenOmniCalculator, predict, save_checkpoint
from sevenomni.cli import main

TEST_SETS = ["test_crystal_gfn1", "test_molecule_gfn1", "test_molecule_gfn2"]


def run_eval(tmp_path, model_path, data, *options):
    out = tmp_path / "eval"
    argv = ["eval", str(model_path), *map(str, data), "--out", str(out), "--workers", "0",
            "--cache-dir", str(tmp_path / "cache"), "--quiet", *options]
    assert main(argv) == 0
    return out, json.loads((out / "metrics.json").read_text())


def row(metrics, database, channel):
    (match,) = [r for r in metrics["results"] if r["database"] == database and r["channel"] == channel]
    return match


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_eval_agrees_with_a_calculator_loop(tmp_path, capsys, dtype):
    model = tiny_model(dtype)
    save_checkpoint(model, tmp_path / "model.pt")
    data = [TINY / f"{name}.extxyz" for name in ("test_crystal_gfn1", "test_molecule_gfn1")]
    out, metrics = run_eval(tmp_path, tmp_path / "model.pt", data, "--predictions", "--batch-size", "7")
    printed = capsys.readouterr().out
    assert "test_crystal_gfn1       gfn1*" in printed and "common" in printed
    for path in data:
        name = path.stem
        structures = read(path, ":")
        predictions = read(out / "predictions" / f"{name}.extxyz", ":")
        assert len(predictions) == len(structures)
        for channel, shift in (("gfn1", None), ("gfn2", None), ("common", "gfn1")):
            calculator = SevenOmniCalculator(model, task=channel, shift_task=shift, device="cpu")
            force_errors, energy_errors, stress_errors, cross, squares = [], [], [], 0.0, 0.0
            for atoms, predicted in zip(structures, predictions):
                atoms.calc = calculator
                forces, reference = atoms.get_forces(), atoms.arrays["REF_forces"]
                force_errors.append((forces - reference).ravel())
                cross += float((forces * reference).sum())
                squares += float((reference**2).sum())
                energy_errors.append((atoms.get_potential_energy() - atoms.info["REF_energy"]) / len(atoms))
                if "REF_stress" in atoms.info:
                    stress_errors.append(atoms.get_stress() - atoms.info["REF_stress"])
                    np.testing.assert_allclose(predicted.info[f"sevenomni_{channel}_stress"], atoms.get_stress(), atol=1e-5)
                np.testing.assert_allclose(predicted.arrays[f"sevenomni_{channel}_forces"], forces, atol=1e-5)
                assert predicted.info[f"sevenomni_{channel}_energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-4)
                np.testing.assert_allclose(predicted.arrays["REF_forces"], atoms.arrays["REF_forces"])
            scored = row(metrics, name, channel)
            force_errors = np.concatenate(force_errors)
            assert scored["forces_mae"] == pytest.approx(np.abs(force_errors).mean(), abs=1e-6)
            assert scored["forces_rmse"] == pytest.approx(np.sqrt((force_errors**2).mean()), abs=1e-6)
            assert scored["energy_mae"] == pytest.approx(1000 * np.abs(energy_errors).mean(), abs=1e-3)
            assert scored["softening_scale"] == pytest.approx(cross / squares, abs=1e-6)
            if stress_errors:
                assert scored["stress_mae"] == pytest.approx(np.abs(stress_errors).mean(), abs=1e-6)
            else:
                assert scored["stress_mae"] is None  # NaN in the JSON
            assert scored["own"] == (channel == "gfn1")


def test_softening_scale_of_a_model_scaled_by_0_8(tmp_path):
    model = tiny_model()
    structures = read(TINY / "test_crystal_gfn1.extxyz", ":") + read(TINY / "test_molecule_gfn1.extxyz", ":")
    for atoms, result in zip(structures, predict(model, structures, "gfn1", device="cpu")):
        atoms.info = {"REF_energy": result["energy"]}
        atoms.arrays = {key: atoms.arrays[key] for key in ("numbers", "positions")}
        atoms.arrays["REF_forces"] = result["forces"]
    write(tmp_path / "labels_gfn1.extxyz", structures, format="extxyz")
    with torch.no_grad():
        model.energy_scale.weight.mul_(0.8)
        model.energy_shift.weight.mul_(0.8)
    save_checkpoint(model, tmp_path / "soft.pt")
    _, metrics = run_eval(tmp_path, tmp_path / "soft.pt", [tmp_path / "labels_gfn1.extxyz"], "--task", "gfn1")
    (scored,) = metrics["results"]
    assert scored["softening_scale"] == pytest.approx(0.80, abs=0.005)
    assert scored["own"] and scored["structures"] == len(structures)


def test_outputs_on_the_tiny_test_sets(tmp_path):
    save_checkpoint(tiny_model(dtype="float32"), tmp_path / "model.pt")
    data = [TINY / f"{name}.extxyz" for name in TEST_SETS]
    out, metrics = run_eval(tmp_path, tmp_path / "model.pt", data)
    assert [d["own"] for d in metrics["databases"]] == ["gfn1", "gfn1", "gfn2"]
    assert len(metrics["results"]) == 3 * 3
    for name in ["transfer_matrix.png"] + [f"parity_{n}.png" for n in TEST_SETS]:
        assert (out / name).stat().st_size > 10_000, name
    assert not (out / "predictions").exists()
    # One channel: the common PES with each database's own shifts.
    _, common = run_eval(tmp_path, tmp_path / "model.pt", data, "--task", "common")
    assert [r["channel"] for r in common["results"]] == ["common"] * 3
    assert row(common, "test_molecule_gfn2", "common")["forces_mae"] == pytest.approx(
        row(metrics, "test_molecule_gfn2", "common")["forces_mae"], rel=1e-6
    )


def test_own_task_from_the_command_line_and_clear_errors(tmp_path, capsys):
    save_checkpoint(tiny_model(), tmp_path / "model.pt")
    plain = tmp_path / "molecules.extxyz"
    write(plain, read(TINY / "test_molecule_gfn2.extxyz", ":4"), format="extxyz")
    _, metrics = run_eval(tmp_path, tmp_path / "model.pt", [plain])
    assert metrics["databases"][0]["own"] is None
    assert [r["channel"] for r in metrics["results"]] == ["gfn1", "gfn2"]  # no common without an own task
    assert "skipped common: own task unknown (give --own molecules=TASK)" in capsys.readouterr().out
    _, metrics = run_eval(tmp_path, tmp_path / "model.pt", [plain], "--own", "molecules=GFN2")
    assert row(metrics, "molecules", "gfn2")["own"]

    base = ["eval", str(tmp_path / "model.pt"), "--out", str(tmp_path / "x"), "--cache-dir", str(tmp_path / "cache"),
            "--workers", "0", "--quiet"]
    for extra, message in (
        ([str(plain), "--task", "common"], "database 'molecules': the common channel needs the task"),
        ([str(plain), "--task", "pbe"], "unknown task 'pbe'"),
        ([str(plain), "--own", "crystals=gfn1"], "--own names unknown database(s) ['crystals']"),
        ([str(plain), "--own", "molecules"], "--own expects DATABASE=TASK"),
        ([str(tmp_path / "missing.extxyz")], "missing.extxyz: no such file or directory"),
    ):
        assert main(base + extra) == 2
        error = capsys.readouterr().err.strip()
        assert message in error and "\n" not in error
