"""stages[].loss: a stage's own loss weights (the rest from train.loss), in force from its start,
in its start line, and again when a run resumes in it."""

from __future__ import annotations

import logging

import pytest
import torch
from training_helpers import logged_rows, make_run, stop_like_sigterm_after

from sevenomni.train.config import ConfigError, LossSection, StageLossWeights, load_config
from sevenomni.train.trainer import Trainer, TrainingInterrupted

torch.set_num_threads(1)


def two_stage_run(tmp_path) -> dict:
    """train.loss energy 1, forces 10, stress 1; the second stage drops the energy (forces and stress inherited)."""
    return make_run(tmp_path, count=4, overrides={
        "train.checkpoint_every": 1,
        "stages": [
            {"name": "first", "databases": ["crystal", "molecule"], "steps": 2},
            {"name": "second", "databases": ["crystal", "molecule"], "steps": 3, "loss": {"energy": 0}},
        ],
    })


def assert_loss_is_weighted(rows, energy: float, forces: float, stress: float):
    assert rows
    for row in rows:
        assert row["loss_energy"] > 0  # the term is computed and logged, whatever its weight
        expected = energy * row["loss_energy"] + forces * row["loss_forces"] + stress * row["loss_stress"]
        assert row["loss"] == pytest.approx(expected, rel=1e-12)


def test_a_stage_trains_with_its_own_weights(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="sevenomni")
    Trainer(load_config(raw=two_stage_run(tmp_path))).run()
    rows = logged_rows(tmp_path / "run")
    assert_loss_is_weighted([r for r in rows if r["stage"] == "first"], energy=1, forces=10, stress=1)
    assert_loss_is_weighted([r for r in rows if r["stage"] == "second"], energy=0, forces=10, stress=1)
    assert "stage first: crystal, molecule, 2 steps, lr 0.01, loss (mse) weights: energy 1, forces 10, stress 1" in caplog.text
    assert "stage second: crystal, molecule, 3 steps, lr 0.01, loss (mse) weights: energy 0, forces 10, stress 1" in caplog.text


def test_a_run_resumed_in_a_stage_keeps_its_weights(tmp_path, caplog):
    raw = two_stage_run(tmp_path)
    trainer = Trainer(load_config(raw=raw))
    stop_like_sigterm_after(trainer, 3)  # the first step of the second stage
    with pytest.raises(TrainingInterrupted):
        trainer.run()
    caplog.set_level(logging.INFO, logger="sevenomni")
    caplog.clear()
    Trainer(load_config(raw=raw), resume=True).run()
    assert "stage second: crystal, molecule, from step 1 of 3, lr 0.01, loss (mse) weights: energy 0" in caplog.text
    resumed = [row for row in logged_rows(tmp_path / "run") if row["step"] > 3]
    assert [row["step"] for row in resumed] == [4, 5]
    assert_loss_is_weighted(resumed, energy=0, forces=10, stress=1)


def test_missing_weights_are_inherited_and_kind_stays_global():
    loss = LossSection(kind="huber", huber_delta=0.1, energy=2, forces=10, stress=1)
    assert loss.with_weights(None) == loss
    assert loss.with_weights(StageLossWeights(energy=50)) == LossSection(
        kind="huber", huber_delta=0.1, energy=50, forces=10, stress=1
    )
    assert loss.with_weights(StageLossWeights(stress=0)).stress == 0  # 0 is a weight, not "inherit"


@pytest.mark.parametrize("key", ["kind", "huber_delta"])
def test_a_stage_cannot_set_the_loss_kind(tmp_path, key):
    raw = make_run(tmp_path, count=4)
    with pytest.raises(ConfigError, match=rf"stages.0.loss: .*{key} appl(y|ies) to the whole run: set them in train.loss"):
        load_config(raw=raw, overrides=[f"stages.0.loss={{{key}: 1, energy: 2}}"])
    with pytest.raises(ConfigError, match=r"stages.0.loss.energy: .*greater than or equal to 0"):
        load_config(raw=raw, overrides=["stages.0.loss={energy: -1}"])
    with pytest.raises(ConfigError, match=r"stages.0.loss.forse: unknown key \(did you mean forces\?\)"):
        load_config(raw=raw, overrides=["stages.0.loss={forse: 1}"])


def test_stress_counts_as_trained_when_any_stage_trains_it(tmp_path):
    """The start-up hint and the final table's note ("stress ... not trained") ask the stages, not train.loss alone."""
    raw = make_run(tmp_path, count=4, overrides={"train.loss.stress": 0})
    assert not load_config(raw=raw).stress_trained
    assert load_config(raw=raw, overrides=["stages.0.loss={stress: 1}"]).stress_trained
    raw = make_run(tmp_path, count=4, overrides={"train.loss.stress": 1})
    assert not load_config(raw=raw, overrides=["stages.0.loss={stress: 0}"]).stress_trained
