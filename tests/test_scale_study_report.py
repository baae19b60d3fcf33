"""benchmarks/scale_study_report.py: the scale treatment is chosen on validation only, per data set and overall."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_report():
    spec = importlib.util.spec_from_file_location("scale_study_report", ROOT / "benchmarks" / "scale_study_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report = load_report()


def run(arm: str, seed: int, validation: float, test: float) -> dict:
    return {
        "arm": arm, "seed": seed,
        "validation": {"selection_forces_mae": validation},
        "metrics": {
            "molecule_gfn1": {"forces_mae": test}, "molecule_gfn1_on_gfn2_channel": {"forces_mae": 0.4},
            "crystal_gfn1": {"forces_mae": 0.5}, "molecule_gfn2": {"forces_mae": 0.4}, "theta_t_norm": 0.1,
            "molecule_gfn1_gap_parts": {"parts": {"energy_scale": {"closed": 0.2}}},
        },
    }


def data_set(validation: dict[str, float], test: dict[str, float]) -> dict:
    runs = [run(arm, seed, validation[arm] + 0.001 * seed, test[arm]) for arm in validation for seed in range(3)]
    return {"runs": runs, "summary": report.summarize(runs)}


ARMS = list(report.TREATMENTS)


def test_the_winner_is_chosen_on_validation_even_where_the_test_set_prefers_another():
    # validation prefers the penalized scale; the test molecules would prefer the fixed one
    validation = dict(zip(ARMS, [0.50, 0.52, 0.40, 0.60]))
    test = dict(zip(ARMS, [1.0, 0.9, 0.8, 0.1]))
    selection = report.select({"a": data_set(validation, test), "b": data_set(validation, test)})
    assert selection["winners"] == {"a": "multi_task_scale_penalized", "b": "multi_task_scale_penalized"}
    assert selection["default_scale_per_task"] == "penalized"


def test_without_a_common_winner_the_default_is_one_not_worse_anywhere():
    # a prefers shared, b prefers fixed; the free scale is clearly worse on b, penalized ties both winners
    first = data_set(dict(zip(ARMS, [0.50, 0.40, 0.40, 0.60])), dict(zip(ARMS, [1.0] * 4)))
    second = data_set(dict(zip(ARMS, [0.90, 0.70, 0.50, 0.50])), dict(zip(ARMS, [1.0] * 4)))
    first["runs"] = [r for r in first["runs"] if r["arm"] != "multi_task_scale_penalized"] + [
        run("multi_task_scale_penalized", s, 0.40 + 0.001 * s, 1.0) for s in range(3)]
    first["summary"] = report.summarize(first["runs"])
    selection = report.select({"a": first, "b": second})
    assert selection["winners"]["a"] in ("multi_task_scale_shared", "multi_task_scale_penalized")
    assert selection["winners"]["b"] in ("multi_task_scale_penalized", "multi_task_scale_fixed")
    assert selection["default_arm"] == "multi_task_scale_penalized"
    assert "no treatment wins on every data set" in selection["reason"]


def test_the_channel_ratio_and_the_scale_share_of_the_gap_come_from_each_run():
    values = report.run_values(run("multi_task", 0, 0.5, 1.2))
    assert values["ratio"] == 1.2 / 0.4 and values["scale_closes"] == 0.2
