"""The ``sevenomni`` command line: version, and what ``train`` shows and leaves in a batch job."""

from __future__ import annotations

import pytest
import torch
from training_helpers import make_run, write_config

import sevenomni
from sevenomni.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"sevenomni {sevenomni.__version__}" == "sevenomni 0.1.0"


def test_train_in_a_batch_job_logs_progress_lines_and_its_config_reproduces_the_run(tmp_path, capsys):
    raw = make_run(tmp_path, overrides={"train.progress_bar": True})
    config = write_config(raw, tmp_path / "run.yaml")
    assert main(["train", str(config), "--set", "stages.0.steps=4", "--set", "train.optimizer.lr=0.02"]) == 0
    shown = capsys.readouterr()
    assert "\r" not in shown.err + shown.out  # standard error is no terminal here: no progress-bar frames
    progress = [line for line in shown.out.splitlines() if line.startswith("stage both: step ")]
    assert [line.split()[3] for line in progress] == [f"{step}/4" for step in range(1, 5)]
    assert "final validation" in shown.out
    run_dir = tmp_path / "run"
    log = (run_dir / "train.log").read_text()
    for line in shown.out.splitlines():
        assert line.strip() in log, line  # train.log holds what the console showed
    first = torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]
    assert main(["train", str(run_dir / "config.yaml"), "--overwrite"]) == 0
    again = torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(first[key], again[key]) for key in first)


# ----------------------------------------------------------------------------- habits of other codes
def test_a_structure_file_given_as_a_model_is_named_as_such(tmp_path, capsys):
    from ase.build import molecule
    from ase.io import write

    write(tmp_path / "water.extxyz", molecule("H2O"))
    assert main(["info", str(tmp_path / "water.extxyz")]) == 2
    error = capsys.readouterr().err
    assert "is a structure file (extxyz), not a model" in error and "damaged" not in error


@pytest.mark.parametrize("keyword", ["head", "modal"])
def test_the_calculator_answers_other_codes_channel_keywords_with_task(keyword):
    with pytest.raises(TypeError, match=rf"\['{keyword}'\] \({keyword}=: sevenomni calls the channel task=\)"):
        sevenomni.SevenOmniCalculator("unused.pt", **{keyword: "PBE"})
