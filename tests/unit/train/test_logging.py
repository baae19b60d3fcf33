"""Metrics go to CSV and JSON lines always, and to wandb (offline here) when configured."""

import csv
import json

import pytest

from sevenomni.train.metric_log import MetricsLogger


def test_csv_and_jsonl_without_wandb(tmp_path):
    logger = MetricsLogger(tmp_path, None, {}, enabled=True)
    logger.log("validation", {"database": "a", "forces_mae": 0.5, "stress_mae": float("nan")}, step=3)
    logger.log("validation", {"database": "b", "forces_mae": 0.25, "stress_mae": 0.1}, step=3)
    rows = list(csv.DictReader(open(tmp_path / "validation.csv")))
    assert [r["database"] for r in rows] == ["a", "b"] and rows[1]["forces_mae"] == "0.25"
    lines = [json.loads(line) for line in open(tmp_path / "validation.jsonl")]
    assert lines[0] == {"step": 3, "database": "a", "forces_mae": 0.5, "stress_mae": None}


def test_csv_columns_stay_aligned_when_rows_differ_in_keys(tmp_path):
    """A batch without stress labels logs no loss_stress: later values must not shift columns."""
    logger = MetricsLogger(tmp_path, None, {}, enabled=True)
    logger.log("train", {"loss_energy": 1.0, "loss_forces": 2.0, "theta_t_norm": 0.5}, step=1)
    logger.log("train", {"loss_energy": 1.5, "loss_stress": 3.0, "loss_forces": 2.5, "theta_t_norm": 0.6}, step=2)
    logger.log("train", {"loss_energy": 1.25, "loss_forces": 2.25, "theta_t_norm": 0.7}, step=3)
    rows = list(csv.DictReader(open(tmp_path / "train.csv")))
    assert [r["theta_t_norm"] for r in rows] == ["0.5", "0.6", "0.7"]
    assert [r["loss_stress"] for r in rows] == ["", "3.0", ""]
    assert [r["loss_forces"] for r in rows] == ["2.0", "2.5", "2.25"]


def test_disabled_logger_writes_nothing(tmp_path):
    MetricsLogger(tmp_path, {"mode": "offline"}, {}, enabled=False).log("train", {"loss": 1.0}, step=1)
    assert list(tmp_path.iterdir()) == []


def test_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = MetricsLogger(tmp_path, {"project": "sevenomni-test", "mode": "offline"}, {"seed": 0}, enabled=True)
    logger.log("train", {"loss": 1.5, "lr": 0.01}, step=1)
    logger.close()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))
    assert (tmp_path / "train.csv").exists()


def test_rewind_drops_later_rows_rows_cut_short_and_the_final_metrics(tmp_path):
    logger = MetricsLogger(tmp_path, None, {}, enabled=True)
    for step in (1, 2, 3):
        logger.log("train", {"stage": "a, b", "loss": 0.5}, step=step)
    logger.log("final", {"loss": 0.25}, step=3)
    with open(tmp_path / "train.csv", "a") as handle:
        handle.write('1,"a, b",0.')  # a kill while writing: no line end
    with open(tmp_path / "train.jsonl", "a") as handle:
        handle.write('{"step": 1, "st')
    (tmp_path / "validation.csv").write_text("step,datab")
    logger.rewind(2)
    assert [row["step"] for row in csv.DictReader(open(tmp_path / "train.csv"))] == ["1", "2"]
    assert [json.loads(line)["step"] for line in open(tmp_path / "train.jsonl")] == [1, 2]
    assert not any((tmp_path / name).exists() for name in ("final.csv", "final.jsonl", "validation.csv"))
    logger.log("train", {"stage": "a, b", "loss": 0.75}, step=3)
    logger.log("validation", {"database": "a"}, step=3)
    assert [row["loss"] for row in csv.DictReader(open(tmp_path / "train.csv"))] == ["0.5", "0.5", "0.75"]
    assert list(csv.DictReader(open(tmp_path / "validation.csv"))) == [{"step": "3", "database": "a"}]
