"""Linear correction (from the systematic-softening paper): one scalar per task on the shift-free energy, trained on ONE structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from analysis_helpers import tiny_model
from ase.io import read, write
from training_helpers import TINY

from sevenomni import load_model, predict, save_checkpoint
from sevenomni.train.config import ConfigError, load_config
from sevenomni.train.trainer import Trainer


def labelled_by(model, structures, task):
    """Copies of ``structures`` with ``model``'s energy, forces (and stress) as REF labels."""
    out = []
    for atoms, result in zip(structures, predict(model, structures, task, device="cpu")):
        atoms = atoms.copy()
        atoms.calc = None
        atoms.info = {"REF_energy": result["energy"]}
        atoms.arrays = {key: atoms.arrays[key] for key in ("numbers", "positions")}
        atoms.arrays["REF_forces"] = result["forces"]
        if "stress" in result:
            atoms.info["REF_stress"] = result["stress"]
        out.append(atoms)
    return out


def softening_scale(model, structures, task):
    """Slope through the origin of predicted against reference force components."""
    predicted = np.concatenate([r["forces"].ravel() for r in predict(model, structures, task, device="cpu")])
    reference = np.concatenate([a.arrays["REF_forces"].ravel() for a in structures])
    return float(predicted @ reference / (reference @ reference))


def correction_run(tmp_path, start, structure_file, steps=150):
    raw = {
        "model": {"init_from": str(start)},
        "data": {
            "databases": [{"name": "one", "path": str(structure_file), "task": "gfn1", "split": {"valid_fraction": 0.0}}],
            "sampling": {"mode": "proportional", "batch_size": 1, "seed": 0},
            "cache_dir": str(tmp_path / "cache"),
        },
        "train": {
            "run_dir": str(tmp_path / "run"),
            "freeze": "all_but_linear_correction",
            "loss": {"kind": "mse", "energy": 0.1, "forces": 100.0, "stress": 0.1},
            "optimizer": {"kind": "adam", "lr": 0.01},
            "schedule": {"kind": "cosine", "final_lr_ratio": 0.01},
            "progress_bar": False,
        },
        "stages": [{"name": "correct", "databases": ["one"], "steps": steps}],
    }
    return Trainer(load_config(raw=raw)).run()


def test_one_structure_corrects_a_model_scaled_by_0_8_and_changes_nothing_else(tmp_path):
    reference = tiny_model(tasks=("gfn1",))
    structures = read(TINY / "test_crystal_gfn1.extxyz", ":") + read(TINY / "test_molecule_gfn1.extxyz", ":")
    labelled = labelled_by(reference, structures, "gfn1")
    write(tmp_path / "one.extxyz", labelled[:1], format="extxyz")
    held_out = labelled[1:]

    soft = tiny_model(tasks=("gfn1",))
    with torch.no_grad():
        soft.energy_scale.weight.mul_(0.8)  # the shift-free energy, hence forces and stress, × 0.8
    assert softening_scale(soft, held_out, "gfn1") == pytest.approx(0.80, abs=0.005)
    save_checkpoint(soft, tmp_path / "soft.pt")

    corrected = correction_run(tmp_path, tmp_path / "soft.pt", tmp_path / "one.extxyz")
    assert softening_scale(corrected, held_out, "gfn1") == pytest.approx(1.00, abs=0.01)
    assert float(corrected.linear_correction.weight) == pytest.approx(1.25, abs=0.0125)

    before, after = soft.state_dict(), corrected.state_dict()
    assert set(after) - set(before) == {"linear_correction.weight"}
    for name, value in before.items():
        assert torch.equal(value, after[name].to(value.device)), name

    exported = load_model(tmp_path / "run" / "model.pt")  # the scalar is part of the model file
    assert exported.config.linear_correction
    assert torch.equal(exported.linear_correction.weight, corrected.linear_correction.weight)
    (first,) = predict(exported, held_out[:1], "gfn1", device="cpu")
    assert np.allclose(first["forces"], held_out[0].arrays["REF_forces"], atol=1e-2 * np.abs(first["forces"]).max())


def test_a_new_correction_starts_at_one_and_changes_no_prediction():
    model = tiny_model()
    structures = read(TINY / "test_crystal_gfn1.extxyz", ":3")
    before = predict(model, structures, "gfn2", device="cpu")
    model.enable_linear_correction()
    assert model.config.linear_correction and model.linear_correction.weight.shape == (2, 1)
    assert torch.equal(model.linear_correction.weight, torch.ones(2, 1, dtype=torch.float64))
    for a, b in zip(before, predict(model, structures, "gfn2", device="cpu")):
        assert a["energy"] == b["energy"] and np.array_equal(a["forces"], b["forces"])
    assert {name for name, _ in model.energy_reference_parameters()} >= {"linear_correction.weight"}


def test_linear_correction_needs_a_trained_model(tmp_path):
    raw = {
        "data": {
            "databases": [{"name": "one", "path": str(TINY / "crystal_gfn1.extxyz"), "task": "gfn1"}],
            "sampling": {"batch_size": 1},
        },
        "train": {"freeze": "all_but_linear_correction"},
        "stages": [{"name": "s", "databases": ["one"], "steps": 1}],
    }
    with pytest.raises(ConfigError, match="freeze: all_but_linear_correction.*init_from"):
        load_config(raw=raw)
