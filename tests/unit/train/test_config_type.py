"""config_type (MACE-style structure tags): per-type loss weights and per-type eval errors."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from analysis_helpers import tiny_model
from ase.io import write
from data_helpers import crystal, labelled
from pydantic import ValidationError
from training_helpers import make_run

from sevenomni import save_checkpoint
from sevenomni.analysis.config_types import UNTAGGED
from sevenomni.analysis.evaluate import choose_channels, evaluate_databases, open_sources
from sevenomni.cli import main
from sevenomni.core.keys import ENERGY, FORCES, STRESS
from sevenomni.data.dataset import LMDBDataset, database_datasets
from sevenomni.data.graph import collate
from sevenomni.data.ingest import cached_store
from sevenomni.data.sources import Database
from sevenomni.data.spec import DatabaseSpec
from sevenomni.train.config import ConfigError, LossSection, load_config
from sevenomni.train.loss import EnergyForceStressLoss
from sevenomni.train.report import config_type_lines
from sevenomni.train.trainer import Trainer

TYPES = ["bulk", "rattled", "bulk", None, "rattled", "bulk"]


def tagged_structures(types=TYPES) -> list:
    structures = []
    for i, kind in enumerate(types):
        atoms = labelled(crystal(seed=i), seed=i)
        if kind is not None:
            atoms.info["config_type"] = kind
        structures.append(atoms)
    return structures


def store_of(tmp_path, structures, name="mixed") -> str:
    path = tmp_path / f"{name}.extxyz"
    write(path, structures, format="extxyz")
    (store,) = cached_store([str(path)], tmp_path / "cache", name=name)
    return store


def loss_terms(dataset: LMDBDataset, items: list[int]):
    """The loss terms of a batch of ``items`` against a fixed fake prediction (a function of the structure)."""
    batch = collate([dataset[i] for i in items])
    prediction = {
        ENERGY: batch.energy.view(-1) + batch.num_atoms * 0.1 * batch.pos[batch.ptr[:-1], 0],
        FORCES: batch.forces + 0.3 * torch.sin(batch.pos),
    }
    prediction[STRESS] = batch.stress + 0.01 * torch.cos(batch.energy).view(-1, 1, 1)
    loss = EnergyForceStressLoss(LossSection(stress=1.0), torch.ones(1, 3, dtype=torch.float64))
    return loss(prediction, batch)


def test_weights_reach_the_loss_terms(tmp_path):
    store = store_of(tmp_path, tagged_structures())
    weighted = LMDBDataset(store, 3.5, 0, 0, config_type_weights={"bulk": 0.0, "rattled": 1.0})
    plain = LMDBDataset(store, 3.5, 0, 0)
    assert [float(weighted[i].structure_weight) for i in range(len(TYPES))] == [0, 1, 0, 1, 1, 0]
    assert all(float(plain[i].structure_weight) == 1.0 for i in range(len(TYPES)))
    everything = loss_terms(weighted, list(range(len(TYPES))))
    kept = [i for i, kind in enumerate(TYPES) if kind != "bulk"]
    alone = loss_terms(plain, kept)
    for label in (ENERGY, FORCES, STRESS):
        # The weight-0 structures add nothing; the mean stays over every labelled element (as MACE does).
        assert float(everything[label].total) == pytest.approx(float(alone[label].total), rel=1e-12)
        assert float(everything[label].total) > 0
    assert float(everything[ENERGY].count) == len(TYPES)
    doubled = LMDBDataset(store, 3.5, 0, 0, config_type_weights={"rattled": 2.0})
    twice, once = loss_terms(doubled, [1]), loss_terms(plain, [1])
    assert float(twice[FORCES].total) == pytest.approx(2 * float(once[FORCES].total), rel=1e-12)


def test_default_weighs_untagged_and_unlisted_types(tmp_path):
    store = store_of(tmp_path, tagged_structures())
    dataset = LMDBDataset(store, 3.5, 0, 0, config_type_weights={"Default": 0.5, "bulk": 2.0})
    assert [float(dataset[i].structure_weight) for i in range(len(TYPES))] == [2, 0.5, 2, 0.5, 0.5, 2]
    assert dataset.config_types() == TYPES


def test_spec_weights_reach_both_sides_of_the_split(tmp_path):
    store = store_of(tmp_path, tagged_structures())
    spec = DatabaseSpec(name="mixed", path="mixed.extxyz", task="PBE", config_type_weights={"rattled": 3.0},
                        split={"valid_fraction": 0.5})
    train, valid = database_datasets(spec, [store], 3.5, 0, 0)
    for dataset in (train, valid):
        types = dataset.config_types()
        assert [float(dataset[i].structure_weight) for i in range(len(dataset))] == [
            3.0 if kind == "rattled" else 1.0 for kind in types
        ]


def test_negative_weight_is_a_config_error():
    with pytest.raises(ValidationError, match=r"config_type_weights must be >= 0: \{'bulk': -1.0\}"):
        DatabaseSpec(name="a", path="a.extxyz", task="PBE", config_type_weights={"bulk": -1.0})
    with pytest.raises(ValidationError, match="config_type_weights"):
        DatabaseSpec(name="a", path="a.extxyz", task="PBE", config_type_weights={"bulk": "heavy"})


def test_start_up_lines_list_the_types_and_warn_of_absent_ones(tmp_path):
    store = store_of(tmp_path, tagged_structures())
    spec = DatabaseSpec(name="mixed", path="mixed.extxyz", task="PBE",
                        config_type_weights={"Default": 0.5, "bulk": 2.0, "dimer": 0.1})
    train, valid = database_datasets(spec, [store], 3.5, 0, 0)
    lines = config_type_lines(Database(spec.name, spec.path, spec.task, 0, 0, train, valid, spec))
    assert lines == [
        "database mixed: config types bulk ×3 (weight 2), rattled ×2 (weight 0.5), untagged ×1 (weight 0.5)",
        "warning: database mixed: config_type_weights names ['dimer'], which none of its structures carries",
    ]
    spec = DatabaseSpec(name="mixed", path="mixed.extxyz", task="PBE")
    assert config_type_lines(Database(spec.name, spec.path, spec.task, 0, 0, train, valid, spec)) == []


def scored(model, paths, tmp_path, by_config_type=True):
    databases = open_sources(paths, model, tmp_path / "cache")
    for database in databases:
        choose_channels(database, model, "gfn1")
    return evaluate_databases(model, databases, batch_size=4, device="cpu", by_config_type=by_config_type)


def test_eval_errors_by_config_type_equal_eval_on_each_subset(tmp_path):
    model = tiny_model()
    structures = tagged_structures()
    path = tmp_path / "mixed.extxyz"
    write(path, structures, format="extxyz")
    evaluation = scored(model, [path], tmp_path)
    by_type = {row["config_type"]: row for row in evaluation.config_type_rows}
    assert list(by_type) == ["bulk", "rattled", UNTAGGED]
    for kind, name in (("bulk", "bulk"), ("rattled", "rattled"), (None, UNTAGGED)):
        subset = tmp_path / f"only_{name.strip('()')}.extxyz"
        write(subset, [a for a, t in zip(structures, TYPES) if t == kind], format="extxyz")
        (alone,) = scored(model, [subset], tmp_path, by_config_type=False).rows
        assert by_type[name]["structures"] == TYPES.count(kind)
        assert by_type[name]["channel"] == "gfn1" and by_type[name]["database"] == "mixed"
        for metric in ("energy_mae", "energy_rmse", "forces_mae", "forces_rmse", "stress_mae"):
            assert by_type[name][metric] == pytest.approx(alone[metric], rel=1e-10)
    (whole,) = evaluation.rows
    assert whole["structures"] == len(TYPES)  # the database's own row is unchanged


def test_eval_cli_adds_the_table_only_for_several_types(tmp_path, capsys):
    model_path = tmp_path / "model.pt"
    save_checkpoint(tiny_model(), model_path)
    mixed, single = tmp_path / "mixed_gfn1.extxyz", tmp_path / "single_gfn1.extxyz"
    write(mixed, tagged_structures(), format="extxyz")
    write(single, tagged_structures(["bulk"] * 3), format="extxyz")
    out = tmp_path / "eval"

    def run(*data):
        argv = ["eval", str(model_path), *map(str, data), "--out", str(out), "--workers", "0",
                "--cache-dir", str(tmp_path / "cache"), "--quiet", "--task", "gfn1"]
        assert main(argv) == 0
        return capsys.readouterr().out, json.loads((out / "metrics.json").read_text())

    printed, metrics = run(mixed, single)
    rows = metrics["config_types"]
    assert {row["database"] for row in rows} == {"mixed_gfn1"}
    assert [row["config_type"] for row in rows] == ["bulk", "rattled", UNTAGGED]
    assert "config_type" in printed and "rattled" in printed
    assert np.isfinite([row["forces_rmse"] for row in rows]).all()
    printed, metrics = run(single)  # one config type: no table, no key
    assert "config_type" not in printed and "config_types" not in metrics


def test_a_run_reports_its_config_types_and_refuses_negative_weights(tmp_path, caplog):
    raw = make_run(tmp_path, overrides={"stages.0.steps": 1, "data.databases.0.config_type_weights": {"md": -1}})
    with pytest.raises(ConfigError, match=r"config_type_weights must be >= 0: \{'md': -1.0\}"):
        load_config(raw=raw)
    raw["data"]["databases"][0]["config_type_weights"] = {"md": 0.5, "dimer": 2.0}
    with caplog.at_level(logging.INFO, logger="sevenomni"):
        Trainer(load_config(raw=raw)).run()
    messages = [record.getMessage() for record in caplog.records]
    (types,) = [m for m in messages if m.startswith("database crystal: config types")]
    assert "md ×" in types and "(weight 0.5)" in types and "rattle ×" in types and "(weight 1)" in types
    assert "warning: database crystal: config_type_weights names ['dimer'], which none of its structures carries" in messages
    assert not any(m.startswith("database molecule: config types") for m in messages)
