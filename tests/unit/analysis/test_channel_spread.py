"""channel_spread: the gap between a database's own channel and the other channels, in function space."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from analysis_helpers import tiny_model
from ase.io import read, write
from training_helpers import TINY

from sevenomni import predict
from sevenomni.analysis.evaluate import choose_channels, evaluate_databases, format_table, open_sources
from sevenomni.train.report import channel_spread


def scored(model, path, tmp_path):
    databases = open_sources([path], model, tmp_path / "cache", own={path.stem: "gfn1"})
    choose_channels(databases[0], model, "all")
    return {row["channel"]: row for row in evaluate_databases(model, databases, device="cpu").rows}


def test_spread_is_the_rms_force_difference_from_the_own_channel(tmp_path):
    model = tiny_model()
    path = tmp_path / "crystals.extxyz"
    structures = read(TINY / "test_crystal_gfn1.extxyz", ":8")
    write(path, structures, format="extxyz")
    rows = scored(model, path, tmp_path)
    assert rows["gfn1"]["own"] and rows["gfn1"]["channel_spread_forces"] == 0.0
    own, other = (list(predict(model, structures, task, device="cpu")) for task in ("gfn1", "gfn2"))
    expected = np.mean([np.sqrt(np.mean((a["forces"] - b["forces"]) ** 2)) for a, b in zip(own, other)])
    assert rows["gfn2"]["channel_spread_forces"] == pytest.approx(expected, rel=1e-9)
    assert rows["gfn2"]["channel_spread_forces"] > 1e-3 and rows["common"]["channel_spread_forces"] > 1e-3
    assert "spread" in format_table(list(rows.values()))
    # The same measure from arrays, one structure at a time (the ablation runner's path).
    from sevenomni.analysis.metrics import ChannelSpread

    spread = ChannelSpread()
    for mine, theirs in zip(own, other):
        spread.add_structure(mine["forces"], theirs["forces"], mine["energy"], theirs["energy"])
    assert spread.summary()["channel_spread_forces"] == pytest.approx(rows["gfn2"]["channel_spread_forces"], rel=1e-9)
    assert spread.summary()["channel_spread_energy"] == pytest.approx(rows["gfn2"]["channel_spread_energy"], rel=1e-6)


def test_no_spread_without_task_embeddings_whatever_the_energy_references(tmp_path):
    model = copy.deepcopy(tiny_model())
    with torch.no_grad():
        for _, parameter in model.task_embedding_parameters():
            parameter.zero_()
    path = tmp_path / "carbon.extxyz"  # one composition: a per-task shift is a constant offset per atom
    write(path, [a for a in read(TINY / "test_crystal_gfn1.extxyz", ":") if a.get_chemical_formula() == "C16"],
          format="extxyz")
    rows = scored(model, path, tmp_path)
    for channel in ("gfn2", "common"):
        assert rows[channel]["channel_spread_forces"] == pytest.approx(0.0, abs=1e-12)
        assert rows[channel]["channel_spread_energy"] == pytest.approx(0.0, abs=1e-9)
    assert rows["gfn2"]["energy_mae"] != rows["gfn1"]["energy_mae"]  # the references do differ
    assert channel_spread(list(rows.values())) == pytest.approx(0.0, abs=1e-12)
