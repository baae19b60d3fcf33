"""The training start-up summary says what the defaults do (issue 25, friction 2): every loss weight,
zeros included, next to the labels found; stress labels read but not trained get a one-line hint."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from analysis_helpers import tiny_model

from sevenomni.data.isolated_atoms import IsolatedAtoms
from sevenomni.data.spec import DatabaseSpec
from sevenomni.train.config import LossSection
from sevenomni.train.report import final_table, start_up_summary

HINT = ("stress labels found in bulk but train.loss.stress is 0: they are read but not trained; "
        "set train.loss.stress: 1 to train them")


class FakeDataset(list):
    def __init__(self, size: int, label_sources: dict[str, str]):
        super().__init__(range(size))
        self.label_sources = label_sources


def database(name: str, labels: dict[str, str], task_index: int = 0, **spec) -> SimpleNamespace:
    return SimpleNamespace(
        spec=DatabaseSpec(name=name, path=f"{name}.extxyz", task="gfn1", **spec), task_index=task_index,
        train=FakeDataset(8, labels), valid=FakeDataset(2, labels), isolated=IsolatedAtoms(),
    )


BULK = {"energy": "info:REF_energy", "forces": "arrays:REF_forces", "stress": "info:REF_stress"}
MOLECULES = {"energy": "info:REF_energy", "forces": "arrays:REF_forces"}


def summary(loss: LossSection, databases) -> list[str]:
    return start_up_summary(tiny_model(), databases, torch.device("cpu"), 1, loss, stress_trained=loss.stress > 0)


def test_every_loss_weight_is_printed_and_stress_read_but_not_trained_is_pointed_out():
    lines = summary(LossSection(), [database("bulk", BULK), database("molecules", MOLECULES, task_index=1)])
    assert "loss (mse) weights: energy 1, forces 1, stress 0" in lines
    bulk = next(line for line in lines if line.startswith("database bulk"))
    assert ("energy from info:REF_energy (weight 1), forces from arrays:REF_forces (weight 1), "
            "stress from info:REF_stress (weight 0)") in bulk
    assert lines.count(HINT) == 1 and lines[-1] == HINT  # once, for the database that has stress
    assert not any("found in molecules" in line for line in lines)


def test_no_hint_when_stress_is_trained_and_weights_combine_with_the_databases():
    loss = LossSection(stress=0.5, forces=10)
    lines = summary(loss, [database("bulk", BULK, loss_weights={"forces": 0.5, "stress": 2})])
    assert "loss (mse) weights: energy 1, forces 10, stress 0.5" in lines
    bulk = next(line for line in lines if line.startswith("database bulk"))
    assert "forces from arrays:REF_forces (weight 5)" in bulk and "stress from info:REF_stress (weight 1)" in bulk
    assert not any("not trained" in line for line in lines)


def test_the_final_table_says_stress_was_only_evaluated_when_its_weight_is_zero(tmp_path):
    row = {"database": "bulk", "channel": "gfn1", "energy_mae": 1.0, "forces_mae": 0.1, "forces_rmse": 0.2,
           "stress_mae": 0.01}
    untrained = final_table([row], tmp_path / "model.pt", stress_trained=False)
    assert untrained[-1] == "σ MAE: stress was not trained (train.loss.stress is 0), only evaluated"
    trained = final_table([row], tmp_path / "model.pt", stress_trained=True)
    assert not any("not trained" in line for line in trained)
