"""train.early_stopping: a stage whose validation score stops improving ends early; the count
survives --resume and starts afresh in each stage."""

from __future__ import annotations

import logging

import pytest
import torch
from training_helpers import logged_rows, make_run, stop_like_sigterm_after

from sevenomni.train.config import ConfigError, load_config
from sevenomni.train.state import TrainingProgress
from sevenomni.train.trainer import Trainer, TrainingInterrupted

torch.set_num_threads(1)


def stalling_run(tmp_path, patience: int) -> dict:
    """A stage whose learning rate is too small to change anything (20 steps), then a normal one (2 steps)."""
    return make_run(tmp_path, count=4, overrides={
        "train.validate_every": 1,
        "train.checkpoint_every": 1,
        "train.early_stopping": {"patience": patience, "min_delta": 1e-6},
        "stages": [
            {"name": "stuck", "databases": ["crystal", "molecule"], "steps": 20, "lr": 1e-12},
            {"name": "next", "databases": ["crystal", "molecule"], "steps": 2},
        ],
    })


def steps_of(run_dir, stage: str) -> list[int]:
    return [int(row["step"]) for row in logged_rows(run_dir) if row["stage"] == stage]


def test_a_stage_that_stops_improving_ends_and_the_next_stage_runs(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="sevenomni")
    Trainer(load_config(raw=stalling_run(tmp_path, patience=1))).run()
    # step 1 improves on nothing-yet; step 2 does not improve by more than min_delta: patience 1 is used up
    assert ("early stopping: forces_mae has not improved by more than 1e-06 for 1 validations; "
            "stage stuck ends at step 2") in caplog.text
    assert steps_of(tmp_path / "run", "stuck") == [1, 2]
    assert steps_of(tmp_path / "run", "next") == [3, 4]  # the next stage runs its full length
    assert (tmp_path / "run" / "checkpoints" / "stage-1-stuck.pt").is_file()
    assert (tmp_path / "run" / "model.pt").is_file() and (tmp_path / "run" / "model_best.pt").is_file()


def test_the_count_survives_resume(tmp_path, caplog):
    """Stopped after step 2 (one validation without improvement of patience 2), the resumed run
    ends the stage at step 3, as the uninterrupted one does; a count restarted at resume would
    need two more validations."""
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    uninterrupted.mkdir(), interrupted.mkdir()
    Trainer(load_config(raw=stalling_run(uninterrupted, patience=2))).run()
    assert steps_of(uninterrupted / "run", "stuck") == [1, 2, 3]

    raw = stalling_run(interrupted, patience=2)
    trainer = Trainer(load_config(raw=raw))
    stop_like_sigterm_after(trainer, 2)
    with pytest.raises(TrainingInterrupted):
        trainer.run()
    caplog.set_level(logging.INFO, logger="sevenomni")
    caplog.clear()
    Trainer(load_config(raw=raw), resume=True).run()
    assert "stage stuck ends at step 3" in caplog.text
    assert steps_of(interrupted / "run", "stuck") == [1, 2, 3]
    assert steps_of(interrupted / "run", "next") == [4, 5]


def test_each_stage_counts_afresh():
    progress = TrainingProgress()
    progress.stage_improvement.best, progress.stage_improvement.stale = 0.5, 3
    progress.next_stage()
    assert (progress.stage_improvement.best, progress.stage_improvement.stale) == (float("inf"), 0)


def test_a_checkpoint_from_before_early_stopping_loads_with_a_fresh_count():
    saved = TrainingProgress(global_step=7).as_dict()
    del saved["stage_improvement"]
    progress = TrainingProgress.from_dict(saved)
    assert progress.global_step == 7 and progress.stage_improvement.stale == 0


def test_config_errors(tmp_path):
    raw = make_run(tmp_path, count=4)
    with pytest.raises(ConfigError, match=r"train.early_stopping needs train.validate_every > 0"):
        load_config(raw=raw, overrides=["train.early_stopping={patience: 3}"])
    with pytest.raises(ConfigError, match=r"train.early_stopping.patience: .*greater than or equal to 1"):
        load_config(raw=raw, overrides=["train.validate_every=5", "train.early_stopping={patience: 0}"])
    with pytest.raises(ConfigError, match=r"train.early_stopping.patience: Field required"):
        load_config(raw=raw, overrides=["train.validate_every=5", "train.early_stopping={min_delta: 0.1}"])
    with pytest.raises(ConfigError, match=r"train.early_stopping.metric: .*unknown metric 'force_mae'"):
        load_config(raw=raw, overrides=["train.validate_every=5", "train.early_stopping={patience: 2, metric: force_mae}"])
    config = load_config(raw=raw, overrides=["train.validate_every=5", "train.early_stopping={patience: 2}"])
    assert config.train.early_stopping_metric == config.train.best_metric == "forces_mae"
    config = load_config(raw=raw, overrides=["train.validate_every=5",
                                             "train.early_stopping={patience: 2, metric: energy_mae}"])
    assert config.train.early_stopping_metric == "energy_mae"
