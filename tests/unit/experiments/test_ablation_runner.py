"""The ablation runner (sevenomni.experiments.ablation, benchmarks/ablation.py) and the recipes it runs: configs
valid, outputs complete and finite; its reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO

from sevenomni.experiments.ablation import arms as ablation_arms
from sevenomni.experiments.ablation import report as ablation_report
from sevenomni.experiments.ablation import runner, scoring
from sevenomni.experiments.ablation import transfer_gap as transfer_gap_report
from sevenomni.train.config import load_config

ROOT = REPO
RECIPES = ROOT / "recipes"


ARMS = ablation_arms.load_arms()


SCALE_TREATMENTS = {"multi_task_scale_shared": False, "multi_task_scale_penalized": "penalized",
                    "multi_task_scale_fixed": "fixed"}


def test_the_seven_arms_and_the_scale_treatments_are_defined():
    assert list(ARMS) == [
        "single", "single_dbs", "multi_none", "multi_all", "multi_task", "multi_dbs_none", "multi_dbs_task",
        *SCALE_TREATMENTS,
    ]


RUN_CONFIGS = [p for p in sorted((RECIPES / "ablation").glob("*.yaml")) if p.name != "arms.yaml"]


@pytest.mark.parametrize("path", RUN_CONFIGS + [RECIPES / "omni_curriculum.yaml"], ids=lambda p: p.name)
def test_recipe_configs_validate(path):
    config = load_config(path)
    assert config.stages


@pytest.mark.parametrize("data", ["small", "tiny"])
@pytest.mark.parametrize("arm", list(ARMS))
def test_every_arm_is_a_valid_run_config(arm, data):
    spec = ARMS[arm]
    config = load_config(spec["config"], ablation_arms.run_overrides(spec, data, seed=3, steps=7, extra=[]))
    by_name = {d.name: d for d in config.data.databases}
    assert config.train.seed == 3 and config.data.sampling.seed == 3 and config.stages[0].steps == 7
    assert all(Path(d.path).parent == RECIPES / "data" / data for d in config.data.databases)
    assert config.tasks == (["gfn1"] if arm.startswith("single") else ["gfn1", "gfn2"])
    trained = set(config.stages[0].databases)
    assert ("dbs_molecule_gfn1" in trained) == ("dbs" in arm)
    assert by_name["test_molecule_gfn1"].task == "gfn1" and "test_molecule_gfn1" not in trained
    expected_mode = "task" if arm in SCALE_TREATMENTS else {"all": "all", "task": "task"}.get(arm.rsplit("_", 1)[-1], "none")
    assert config.train.regularization.mode == expected_mode
    assert config.model.scale_per_task == SCALE_TREATMENTS.get(arm, True)  # the others: the default


def test_all_arms_share_model_sampling_and_training_settings():
    def shared(path):
        raw = yaml.safe_load(Path(path).read_text())
        train = dict(raw["train"])
        train.pop("run_dir")
        train["regularization"] = dict(train["regularization"], mode=None)  # set per arm
        return raw["model"], raw["data"]["sampling"], train, [s.get("steps") for s in raw["stages"]]

    configs = {arm["config"] for arm in ARMS.values()}
    assert len(configs) == 2
    first, second = (shared(path) for path in configs)
    assert first == second


def test_conformational_energy_removes_each_molecules_offset():
    from ase import Atoms

    structures = [Atoms("H2", info={"source": s}) for s in ("a", "a", "b", "b")]
    errors = scoring.conformational_energy_errors([1.0, 3.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0], structures)
    assert np.allclose(errors, [-0.5, 0.5, 0.0, 0.0])  # (error - molecule mean) / atoms


def finite_numbers(value):
    if isinstance(value, dict):
        return all(finite_numbers(v) for v in value.values())
    if isinstance(value, list):
        return all(finite_numbers(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


def test_runner_on_tiny_data_writes_json_table_and_plot(tmp_path):
    # two runs at once, sharing one data cache (both ingest the same test sets)
    tiny_model = ["model.channels=4", "model.lmax=1", "model.num_layers=2", "model.radial_mlp=[8]"]
    argv = ["--data", "tiny", "--seeds", "0", "--steps", "3", "--arms", "single", "multi_task", "--jobs", "2",
            "--out", str(tmp_path / "results"), "--work", str(tmp_path / "work")]
    argv += [item for assignment in tiny_model for item in ("--set", assignment)]
    runner.main(argv)
    result = json.loads((tmp_path / "results" / "ablation_tiny.json").read_text())
    for key in ("data", "steps", "seeds", "arms", "transfer_floor", "runs", "summary", "machine", "total_wall_s"):
        assert key in result, key
    assert result["steps"] == 3 and result["seeds"] == [0] and list(result["arms"]) == ["single", "multi_task"]
    assert result["machine"]["concurrent_runs"] == 2
    assert result["training_span_s"] >= max(run["train_wall_s"] for run in result["runs"]) - 1  # second resolution
    assert finite_numbers(result)
    assert 0 < result["transfer_floor"]["forces_mae"] < 1
    runs = {run["arm"]: run for run in result["runs"]}
    for run in runs.values():
        assert run["train_wall_s"] > 0 and run["metrics"]["theta_t_norm"] >= 0
        for metric in ("forces_mae", "forces_rmse", "conformational_energy_mae"):
            assert run["metrics"]["molecule_gfn1"][metric] > 0
        assert run["metrics"]["crystal_gfn1"]["stress_mae"] > 0
    assert "molecule_gfn2" not in runs["single"]["metrics"]
    # λ is chosen on validation: the trained databases' validation splits and, where untrained, the DBS.
    validation = runs["multi_task"]["validation"]
    assert set(validation["databases"]) == {"crystal_gfn1", "molecule_gfn2", "dbs_molecule_gfn1"}
    assert validation["selection_forces_mae"] == pytest.approx(
        np.mean([entry["forces_mae"] for entry in validation["databases"].values()])
    )
    assert runs["multi_task"]["metrics"]["molecule_gfn1_on_gfn2_channel"]["forces_mae"] > 0
    summary = result["summary"]["multi_task"]["molecule_gfn1.forces_mae"]
    assert summary["n"] == 1 and summary["std"] is None
    assert summary["mean"] == runs["multi_task"]["metrics"]["molecule_gfn1"]["forces_mae"]
    table = (tmp_path / "results" / "ablation_tiny.md").read_text()
    assert "| Single |" in table and "| Multi, L2 θT |" in table and "Transfer floor" in table
    assert (tmp_path / "results" / "ablation_tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A second call trains nothing: both runs are finished.
    records = [json.loads((tmp_path / "work" / "tiny" / arm / "seed0" / "ablation_run.json").read_text())
               for arm in ("single", "multi_task")]
    runner.main(argv)
    again = [json.loads((tmp_path / "work" / "tiny" / arm / "seed0" / "ablation_run.json").read_text())
             for arm in ("single", "multi_task")]
    assert again == records


def sweep_file(arms_and_seeds, strength=None, validation=0.2, test=0.4):
    """A results file of the runner: ``arms_and_seeds`` maps arm → {seed: mol@gfn1 force MAE}."""
    runs = [
        {"arm": arm, "seed": seed, "train_wall_s": 100.0,
         "metrics": {"theta_t_norm": 1.0, "molecule_gfn1": {"forces_mae": mae}, "crystal_gfn1": {"forces_mae": 0.1}},
         "validation": {"selection_forces_mae": validation}}
        for arm, seeds in arms_and_seeds.items() for seed, mae in seeds.items()
    ]
    summary = {arm: {"validation_forces_mae": {"mean": validation}, "molecule_gfn1.forces_mae": {"mean": test}}
               for arm in arms_and_seeds}
    return {"extra_overrides": [f"train.regularization.strength={strength}"] if strength else [], "runs": runs,
            "summary": summary, "benchmark": "b", "data": "small", "data_dir": "d", "data_sets": {}, "steps": 10,
            "units": {}, "transfer_floor": {"n_structures": 2, "forces_mae": 0.08, "conformational_energy_mae": 2.0},
            "finished_utc": "t", "training_span_s": 300.0,
            "machine": {"threads_per_run": 1, "cpus_available": 2, "processor": "x86_64"}}


def test_sweeps_select_lambda_on_validation_and_report_the_test_preference(tmp_path):
    report = ablation_report
    for strength, validation, test in (("1e-2", 0.3, 0.5), ("1e-1", 0.2, 0.4), ("1", 0.25, 0.3)):
        data = sweep_file({"multi_task": {0: test}}, strength, validation, test)
        (tmp_path / f"ablation_lambda_{strength}.json").write_text(json.dumps(data))
    report.main(["--results", str(tmp_path)])
    chosen = json.loads((tmp_path / "ablation_sweeps.json").read_text())["modes"]["task"]
    assert chosen["selected_lambda"] == 0.1 and chosen["test_preferred_lambda"] == 1.0
    assert "0.1 (selected)" in (tmp_path / "ablation_sweeps.md").read_text()


def test_main_table_takes_each_arm_at_its_selected_lambda_with_paired_differences(tmp_path):
    report = ablation_report
    files = {
        "ablation_lambda_1e-1.json": sweep_file({"multi_task": {0: 0.30, 1: 0.31, 2: 0.20}}, "1e-1", validation=0.2),
        "ablation_lambda_1.json": sweep_file({"multi_task": {0: 0.9, 1: 0.9, 2: 0.9}}, "1", validation=0.3),
        "ablation_all_lambda_1e-5.json": sweep_file({"multi_all": {0: 0.70, 1: 0.50, 2: 0.60}}, "1e-5"),
        "ablation_unregularized.json": sweep_file({"multi_none": {0: 0.40, 1: 0.30, 2: 0.50},
                                                   "single": {0: 0.6, 1: 0.6, 2: 0.6}}),
    }
    for name, data in files.items():
        (tmp_path / name).write_text(json.dumps(data))
    report.main(["--results", str(tmp_path)])
    table = json.loads((tmp_path / "ablation.json").read_text())
    assert table["selected_lambda"] == {"task": 0.1, "all": 1e-5}
    assert table["arms"]["multi_task"]["source"] == "ablation_lambda_1e-1.json"
    assert {run["arm"] for run in table["runs"]} == {"multi_task", "multi_all", "multi_none", "single"}
    assert table["summary"]["multi_task"]["molecule_gfn1.forces_mae"]["n"] == 3
    claims = {entry["claim"]: entry for entry in table["paired_differences"]}
    versus_none = claims["θT-L2 < no regularization"]["metrics"]["molecule_gfn1.forces_mae"]
    assert versus_none["per_seed_meV_per_A"] == pytest.approx([-100, 10, -300])
    assert versus_none["seeds_lower"] == 2 and versus_none["n"] == 3
    assert claims["θT-L2 < L2 on all weights"]["metrics"]["molecule_gfn1.forces_mae"]["seeds_lower"] == 3
    assert claims["DBS + θT-L2 < DBS alone"]["seeds"] == []
    text = (tmp_path / "ablation.md").read_text()
    assert "| Multi, L2 θT (λ = 0.1) |" in text and "Missing (not yet run): single_dbs" in text
    assert "| θT-L2 < no regularization | mol@gfn1 F | -100, +10, -300 |" in text and "| 2/3 |" in text


def test_transfer_gap_report_pairs_each_remedy_with_its_reference(tmp_path):
    report = transfer_gap_report
    reference = sweep_file({"multi_task": {0: 0.30, 1: 0.20, 2: 0.25}}, "1")
    remedy = sweep_file({"multi_task": {0: 0.25, 1: 0.21, 2: 0.20}}, "1")
    remedy["extra_overrides"].append("model.task_embedding_norm=true")
    (tmp_path / "ablation_lambda_1.json").write_text(json.dumps(reference))
    unpenalized = sweep_file({"multi_none": {0: 0.50, 1: 0.40, 2: 0.45}, "single": {0: 0.9, 1: 0.9, 2: 0.9}}, test=0.45)
    (tmp_path / "ablation_unregularized.json").write_text(json.dumps(unpenalized))
    (tmp_path / "transfer_gap_norm_lambda_1.json").write_text(json.dumps(remedy))
    wrong = dict(remedy, extra_overrides=["train.regularization.strength=1"])
    (tmp_path / "transfer_gap_si1_lambda_1.json").write_text(json.dumps(wrong))
    with pytest.raises(SystemExit, match="transfer_gap_si1_lambda_1.json: expected the override"):
        report.main(["--results", str(tmp_path)])
    (tmp_path / "transfer_gap_si1_lambda_1.json").unlink()
    report.main(["--results", str(tmp_path)])
    table = json.loads((tmp_path / "transfer_gap.json").read_text())
    assert list(table["arms"]) == ["reference", "norm"]
    against_lambda = [(point["lambda"], point["arm"]) for point in table["gap_against_lambda"]]
    assert against_lambda == [(0.0, "multi_none"), (1.0, "multi_task")]
    assert table["gap_against_lambda"][0]["summary"]["molecule_gfn1.forces_mae"]["mean"] == pytest.approx(0.45)
    difference = table["paired_differences"]["norm"]["metrics"]["molecule_gfn1.forces_mae"]
    assert difference["per_seed_meV_per_A"] == pytest.approx([-50, 10, -50]) and difference["seeds_lower"] == 2
    text = (tmp_path / "transfer_gap.md").read_text()
    assert "| + RMS norm after adding θT | 3 | 220 ± 26 |" in text and "DBS + θT at SI-1 only" in text
    assert "## The gap against λ" in text and "| 0 | 0 | 450 |" in text
    assert (tmp_path / "transfer_gap.png").read_bytes()[:4] == b"\x89PNG"
