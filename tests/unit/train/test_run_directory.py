"""A run directory is held by one run at a time and never silently mixed with an earlier run."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter

import pytest
from training_helpers import make_run, write_config

from sevenomni.cli import main
from sevenomni.train.config import load_config
from sevenomni.train.trainer import Trainer

HOLD_LOCK = """
import sys, time
from pathlib import Path
from sevenomni.train.run_directory import locked_run_directory
with locked_run_directory(Path(sys.argv[1]), resume=False, overwrite=False):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_second_run_fails_at_once_naming_the_holder_and_a_killed_holder_does_not_block(tmp_path, capsys):
    config = write_config(make_run(tmp_path, overrides={"stages.0.steps": 2}), tmp_path / "run.yaml")
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = sorted(p.name for p in run_dir.iterdir())
        assert main(["train", str(config)]) == 2
        error = capsys.readouterr().err
        assert f"in use by another run (PID {holder.pid}" in error, error
        assert sorted(p.name for p in run_dir.iterdir()) == before  # nothing written beside the holder's lock
    finally:
        holder.kill()  # SIGKILL: the lock file stays behind, its lock goes with the process
        holder.wait()
    assert main(["train", str(config)]) == 0  # its lock file is there, its lock is not
    assert (run_dir / "model.pt").is_file()


def test_a_run_that_fails_to_start_leaves_the_directory_usable(tmp_path):
    raw = make_run(tmp_path, overrides={"stages.0.steps": 1})
    missing = make_run(tmp_path, overrides={"data.databases.0.path": str(tmp_path / "missing.extxyz")})
    with pytest.raises(FileNotFoundError, match="missing.extxyz"):
        Trainer(load_config(raw=missing))
    Trainer(load_config(raw=raw)).run()  # neither refused nor blocked
    assert (tmp_path / "run" / "model.pt").is_file()


def test_an_earlier_run_is_refused_unless_resumed_or_overwritten(tmp_path, capsys):
    raw = make_run(tmp_path, overrides={"stages.0.steps": 2})
    Trainer(load_config(raw=raw)).run()
    run_dir = tmp_path / "run"
    (run_dir / "notes.txt").write_text("the user's own file")
    model = (run_dir / "model.pt").read_bytes()
    with pytest.raises(ValueError, match=r"already holds a run .*--resume .*--overwrite"):
        Trainer(load_config(raw=raw))
    assert main(["train", str(write_config(raw, tmp_path / "run.yaml"))]) == 2
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not both"):
        Trainer(load_config(raw=raw), resume=True, overwrite=True)
    assert (run_dir / "model.pt").read_bytes() == model
    again = make_run(tmp_path, overrides={"stages": [{"name": "again", "databases": ["crystal", "molecule"], "steps": 3}]})
    Trainer(load_config(raw=again), overwrite=True).run()
    assert [row["step"] for row in csv.DictReader(open(run_dir / "train.csv"))] == ["1", "2", "3"]
    assert [row["step"] for row in csv.DictReader(open(run_dir / "final.csv"))] == ["3", "3"]
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("stage-*")) == ["stage-1-again.pt"]
    assert (run_dir / "notes.txt").read_text() == "the user's own file"  # only the run's own files go


def test_resume_after_a_kill_drops_the_metric_rows_logged_after_the_checkpoint(tmp_path):
    raw = make_run(tmp_path, overrides={"stages.0.steps": 5, "train.checkpoint_every": 2, "train.validate_every": 1})
    trainer = Trainer(load_config(raw=raw))
    original = trainer.train_step

    def killed_in_step_4(batch):
        if trainer.progress.global_step == 3:
            raise KeyboardInterrupt("simulated SIGKILL: steps 1-3 logged, the last checkpoint at step 2")
        return original(batch)

    trainer.train_step = killed_in_step_4
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    Trainer(load_config(raw=raw), resume=True).run()
    run_dir = tmp_path / "run"
    per_step = {"train": 1, "validation": 2, "initial": 2, "final": 2}  # two databases validate
    expected = {"train": range(1, 6), "validation": range(1, 6), "initial": [0], "final": [5]}
    for name, count in per_step.items():
        from_csv = Counter(int(row["step"]) for row in csv.DictReader(open(run_dir / f"{name}.csv")))
        from_jsonl = Counter(json.loads(line)["step"] for line in open(run_dir / f"{name}.jsonl"))
        assert from_csv == from_jsonl == {step: count for step in expected[name]}, name


def test_a_run_that_fails_before_step_0_removes_what_it_wrote_and_the_corrected_config_runs(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("the user's own file")
    raw = make_run(tmp_path, overrides={"stages.0.steps": 1})
    wrong = make_run(tmp_path, overrides={"stages.0.steps": 1, "model.elements": ["H"]})
    config = write_config(wrong, tmp_path / "run.yaml")
    with pytest.raises(ValueError, match=r"not in this model's elements"):
        Trainer(load_config(raw=wrong), overwrite=True).run()  # config.yaml and train.log were written, then removed
    assert sorted(p.name for p in run_dir.iterdir() if p.name != ".lock") == ["notes.txt"]
    assert main(["train", str(config), "--overwrite"]) == 2
    assert "not in this model's elements" in capsys.readouterr().err  # the error itself still shows
    assert main(["train", "--resume", str(run_dir)]) == 2
    error = capsys.readouterr().err
    assert "holds no checkpoint" in error and "start it afresh" in error, error
    assert main(["train", str(write_config(raw, config)), "--overwrite"]) == 0
    assert (run_dir / "model.pt").is_file() and (run_dir / "notes.txt").is_file()
