"""Fine-tuning a trained model: energy shifts refit to the new data, new elements added on request."""

from __future__ import annotations

import csv
import logging

import pytest
from ase.io import read, write

from sevenomni.train.config import ConfigError, load_config
from sevenomni.train.trainer import Trainer
from training_helpers import make_run

OFFSET = 3.0  # eV per atom


def molecules_only(raw: dict, steps: int) -> dict:
    raw["data"]["databases"] = raw["data"]["databases"][1:]
    raw["stages"] = [{"name": "m", "databases": ["molecule"], "steps": steps}]
    return raw


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """A tiny model trained a few steps on molecules (H, C, N, O), task gfn2."""
    tmp_path = tmp_path_factory.mktemp("base")
    Trainer(load_config(raw=molecules_only(make_run(tmp_path), steps=4))).run()
    return tmp_path / "run" / "model.pt"


def fine_tune_run(tmp_path, base_model, offset: float = OFFSET, **finetune) -> dict:
    """Fine-tuning ``base_model`` on molecules whose energies are ``offset`` eV per atom higher."""
    raw = molecules_only(make_run(tmp_path), steps=1)
    raw["model"] = {"init_from": str(base_model)}
    raw["train"]["finetune"] = finetune
    path = raw["data"]["databases"][0]["path"]
    structures = read(path, ":")
    for atoms in structures:
        atoms.info["REF_energy"] += offset * len(atoms)
    write(path, structures, format="extxyz")
    return raw


def initial_energy_mae(tmp_path) -> float:
    """The fine-tuned run's energy MAE (meV/atom) before its first step, on its validation split."""
    (row,) = csv.DictReader(open(tmp_path / "run" / "initial.csv"))
    return float(row["energy_mae"])


def test_fine_tuning_into_an_existing_task_refits_its_shifts(tmp_path, base_model, caplog):
    with caplog.at_level(logging.INFO, logger="sevenomni"):
        Trainer(load_config(raw=fine_tune_run(tmp_path, base_model))).run()
    assert initial_energy_mae(tmp_path) < 300  # far below the 3,000 meV/atom offset
    (line,) = [r.getMessage() for r in caplog.records if "before the refit" in r.getMessage()]
    before = float(line.split("energy MAE on those structures ")[1].split(" meV/atom")[0])
    assert before == pytest.approx(1000 * OFFSET, abs=300)


def test_keep_energy_shifts_starts_at_the_offset(tmp_path, base_model):
    Trainer(load_config(raw=fine_tune_run(tmp_path, base_model, keep_energy_shifts=True))).run()
    assert initial_energy_mae(tmp_path) == pytest.approx(1000 * OFFSET, abs=300)


def test_finetune_options_need_a_checkpoint(tmp_path):
    raw = make_run(tmp_path)
    raw["train"]["finetune"] = {"keep_energy_shifts": True}
    with pytest.raises(ConfigError, match=r"train.finetune \['keep_energy_shifts'\] applies to fine-tuning"):
        load_config(raw=raw)
