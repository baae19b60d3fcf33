"""recipes/finetune_7net_mf0.yaml, shrunk to a few steps: SevenNet-MF-0 learns a new task, gfn2.

Needs the ``sevenn`` package (for the 7net-mf-0 checkpoint); skipped without it.
"""

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.io import read

pytest.importorskip("sevenn")

from conftest import REPO

from sevenomni import load_model
from sevenomni.calculators.prediction import predict

ROOT = REPO
RECIPE = ROOT / "recipes" / "finetune_7net_mf0.yaml"
STEPS = 20


def own_forces_mae(path: Path, database: str) -> float:
    with path.open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["database"] == database and r["own"] == "True"]
    assert len(rows) == 1, rows
    assert rows[0]["channel"] == "gfn2"
    return float(rows[0]["forces_mae"])


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("finetune")
    overrides = {
        "train.run_dir": tmp / "run",
        "data.cache_dir": tmp / "cache",
        "stages.0.steps": STEPS,
        "train.validate_every": STEPS,
        "train.validation_channels": "own",
        "train.schedule.warmup_steps": 2,
        "train.progress_bar": "false",
    }
    command = [sys.executable, "-m", "sevenomni.cli", "train", str(RECIPE)]
    for key, value in overrides.items():
        command += ["--set", f"{key}={value}"]
    result = subprocess.run(command, check=False, capture_output=True, text=True, cwd=tmp, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "final validation" in result.stdout
    return tmp / "run"


def test_recipe_finishes_and_appends_the_new_task(run):
    model = load_model(run / "model.pt")
    assert model.tasks == ["R2SCAN", "PBE", "gfn2"]


def test_new_channel_force_error_drops(run):
    """The gfn2 channel starts on the common PES (initial.csv); a few steps must beat it clearly."""
    for database in ("molecule_gfn2", "test_molecule_gfn2"):
        before = own_forces_mae(run / "initial.csv", database)
        after = own_forces_mae(run / "final.csv", database)
        assert math.isfinite(before) and after < 0.85 * before, (database, before, after)


def test_exported_gfn2_channel_is_the_trained_one(run):
    """The logged gfn2 metrics belong to the exported model's channel named gfn2 (task index 2)."""
    tuned = load_model(run / "model.pt")
    molecules = read(ROOT / "recipes" / "data" / "tiny" / "test_molecule_gfn2.extxyz", ":")
    errors = [
        abs(result["forces"] - atoms.arrays["REF_forces"]).ravel()
        for result, atoms in zip(predict(tuned, molecules, "gfn2", device="cpu"), molecules)
    ]
    mae = float(torch.as_tensor(np.concatenate(errors)).mean())
    assert mae == pytest.approx(own_forces_mae(run / "final.csv", "test_molecule_gfn2"), rel=1e-3)


def test_old_channels_keep_their_task_parameters_and_stay_finite(run):
    """R2SCAN/PBE have no data here: their θT rows and shifts are untouched; only θC moved."""
    original = load_model("7net-mf-0")
    tuned = load_model(run / "model.pt")
    for (name, before), (_, after) in zip(original.task_parameters(), tuned.task_parameters()):
        assert torch.equal(before, after[: len(original.tasks)]), name
    moved = [not torch.equal(a, b) for (_, a), (_, b) in zip(original.shared_parameters(), tuned.shared_parameters())]
    assert any(moved)
    crystals = read(ROOT / "recipes" / "data" / "tiny" / "test_crystal_gfn1.extxyz", ":2")
    for task in ("R2SCAN", "PBE"):
        for result in predict(tuned, crystals, task, device="cpu"):
            assert math.isfinite(result["energy"]) and torch.isfinite(torch.as_tensor(result["forces"])).all()
