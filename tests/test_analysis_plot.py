"""`sevenomni plot` and the plot written at the end of `sevenomni train`."""

from __future__ import annotations

import json

import numpy as np

from sevenomni.analysis.history import read_history
from sevenomni.cli import main
from training_helpers import make_run, write_config


def test_train_writes_training_curves_and_plot_redraws_them(tmp_path, capsys):
    raw = make_run(tmp_path, count=8, overrides={"train.validation_channels": "all"})
    raw["stages"] = [
        {"name": "crystals", "databases": ["crystal"], "steps": 3},
        {"name": "both", "databases": ["crystal", "molecule"], "steps": 3},
    ]
    assert main(["train", str(write_config(raw, tmp_path / "run.yaml"))]) == 0
    run_dir = tmp_path / "run"
    assert f"training curves: {run_dir / 'training.png'}" in capsys.readouterr().out
    assert (run_dir / "training.png").stat().st_size > 30_000
    history = read_history(run_dir)
    assert history.stage_starts == [(1, "crystals"), (4, "both")]
    np.testing.assert_array_equal(history.train["step"], np.arange(1, 7))
    assert {"loss", "theta_t_norm", "lr"} <= set(history.train)
    assert history.own[("crystal", "gfn1")] and not history.own[("crystal", "common")]
    assert history.validation[("crystal", "gfn1")]["step"][0] == 0  # initial.jsonl: before the first step
    assert ("molecule", "gfn2") in history.validation
    assert main(["plot", str(run_dir), "--out", str(tmp_path / "again.png")]) == 0
    assert (tmp_path / "again.png").stat().st_size > 30_000


def test_history_keeps_rows_aligned_and_the_last_of_a_repeated_step(tmp_path):
    rows = [
        {"step": 1, "stage": "a", "loss_energy": 1.0, "loss_stress": 0.5, "loss": 2.0},
        {"step": 2, "stage": "a", "loss_energy": 0.9, "loss": 1.8},  # a batch without stress labels
        {"step": 3, "stage": "b", "loss_energy": 0.8, "loss_stress": 0.4, "loss": 1.6},
        {"step": 3, "stage": "b", "loss_energy": 0.7, "loss_stress": 0.3, "loss": 1.4},  # resumed, logged again
    ]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    history = read_history(tmp_path)
    np.testing.assert_array_equal(history.train["loss"], [2.0, 1.8, 1.4])
    np.testing.assert_array_equal(history.train["loss_stress"], [0.5, np.nan, 0.3])
    assert history.stage_starts == [(1, "a"), (3, "b")]
    assert history.validation == {}


def test_plot_of_a_directory_without_logs_is_a_clear_error(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "train.jsonl: no training log" in capsys.readouterr().err
