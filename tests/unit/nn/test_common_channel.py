"""`common` wherever a task name is accepted for inference and analysis (issue 25, friction 10)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from analysis_helpers import tiny_model
from ase.build import molecule
from ase.io import read, write
from conftest import make_model
from training_helpers import TINY

from sevenomni import predict, save_checkpoint
from sevenomni.bridging.select import select
from sevenomni.cli import main
from sevenomni.data.ingest import ingest
from sevenomni.nn.task_names import COMMON_CHANNEL, Tasks

torch.set_num_threads(1)


def test_tasks_channel_is_the_one_rule():
    tasks = Tasks(["PBE", "r2scan"])
    assert tasks.channel("pbe") == 0 and tasks.channel("R2SCAN") == 1
    assert tasks.channel("common") is None and tasks.channel("Common") is None
    assert tasks.channel_name("COMMON") == COMMON_CHANNEL and tasks.channel_name("r2Scan") == "r2scan"
    with pytest.raises(ValueError, match=r"unknown task 'dft'; the tasks are \['PBE', 'r2scan'\], or 'common'"):
        tasks.channel("dft")


def rms_force_difference(model, structures, a, b):
    forces = [np.concatenate([r["forces"] for r in predict(model, structures, task, shift_task=shift, device="cpu")])
              for task, shift in (a, b)]
    return float(np.sqrt(np.mean((forces[0] - forces[1]) ** 2)))


def test_dbs_select_compares_a_task_with_common(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.energy_scale.weight[0].fill_(1.3)  # the common channel takes gfn1's scale, not gfn2's
    store = tmp_path / "molecules"
    write(tmp_path / "molecules.extxyz", read(TINY / "molecule_gfn2.extxyz", ":12"), format="extxyz")
    ingest([tmp_path / "molecules.extxyz"], store)
    chosen = select(store, count=3, strategy="disagreement", model=model, channels=("gfn1", "COMMON"))
    assert chosen["channels"] == ["gfn1", "common"]
    first = read(tmp_path / "molecules.extxyz", str(chosen["indices"][0]))
    assert chosen["scores"][0] == pytest.approx(
        rms_force_difference(model, [first], ("gfn1", None), ("common", "gfn1")), rel=1e-6
    )
    reverse = select(store, count=3, strategy="disagreement", model=model, channels=("common", "gfn1"))
    assert reverse["scores"] == pytest.approx(chosen["scores"], rel=1e-9)
    with pytest.raises(ValueError, match="two different channels"):
        select(store, count=3, strategy="disagreement", model=model, channels=("common", "Common"))
    save_checkpoint(model, tmp_path / "model.pt")
    assert main(["dbs", "select", str(store), "--count", "3", "--strategy", "disagreement", "--model",
                 str(tmp_path / "model.pt"), "--channels", "gfn2", "common", "--device", "cpu",
                 "--out", str(tmp_path / "selection.json")]) == 0


def test_analyze_gap_takes_common_second(tmp_path, capsys):
    from sevenomni.analysis.channel_gap import channel_gap

    model = make_model(task_embedding_sites=["si1", "si2", "readout"])
    structures = [molecule("CH3OH"), molecule("H2O")]
    result = channel_gap(model, structures, "molecule", "common")
    assert result["tasks"] == ["molecule", "common"]
    assert result["gap"] == pytest.approx(
        rms_force_difference(model, structures, ("molecule", None), ("common", "molecule")), rel=1e-9
    )
    assert result["gap"] > 1e-3 and set(result["parts"]) == {"layers.0.si1", "layers.0.si2", "layers.1.si1",
                                                                "layers.1.si2", "readout_hidden", "all"}
    assert result["parts"]["all"]["gap_after_swap"] < 1e-10  # without θT, channel molecule is the common PES
    with pytest.raises(ValueError, match="put 'common' second"):
        channel_gap(model, structures, "common", "molecule")
    save_checkpoint(model, tmp_path / "model.pt")
    write(tmp_path / "mols.extxyz", structures)
    assert main(["analyze", "gap", str(tmp_path / "model.pt"), str(tmp_path / "mols.extxyz"), "--tasks", "molecule",
                 "common", "--out", str(tmp_path / "gap")]) == 0
    assert json.loads((tmp_path / "gap" / "gap.json").read_text())["tasks"] == ["molecule", "common"]


def test_eval_and_predict_take_common(tmp_path):
    model = tiny_model()
    save_checkpoint(model, tmp_path / "model.pt")
    data = tmp_path / "molecules_gfn2.extxyz"
    write(data, read(TINY / "test_molecule_gfn2.extxyz", ":3"), format="extxyz")
    assert main(["eval", str(tmp_path / "model.pt"), str(data), "--task", "Common", "--out", str(tmp_path / "eval"),
                 "--workers", "0", "--cache-dir", str(tmp_path / "cache"), "--quiet", "--predictions"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert [r["channel"] for r in metrics["results"]] == ["common"]
    assert main(["predict", str(tmp_path / "model.pt"), str(data), "--task", "common", "--shift-task", "gfn2",
                 "-o", str(tmp_path / "common.extxyz"), "--device", "cpu"]) == 0
    scored = read(tmp_path / "eval" / "predictions" / "molecules_gfn2.extxyz", ":")
    for a, b in zip(scored, read(tmp_path / "common.extxyz", ":"), strict=True):
        assert a.info["sevenomni_common_energy"] == pytest.approx(b.info["sevenomni_energy"], abs=1e-6)
