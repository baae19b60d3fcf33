"""The scale study report (sevenomni.experiments.ablation.scale_study): the scale treatment is chosen on validation only, per data set and overall."""

from __future__ import annotations

from sevenomni.experiments.ablation import scale_study as report

TREATMENTS = {"multi_task_scale_free": True, "multi_task_scale_shared": False,
              "multi_task_scale_penalized": "penalized", "multi_task_scale_fixed": "fixed"}
ARMS = list(TREATMENTS)


def run(arm: str, seed: int, validation: float, test: float) -> dict:
    return {
        "arm": arm, "seed": seed, "run_dir": f"{arm}/seed{seed}", "scale_per_task": TREATMENTS.get(arm, True),
        "validation": {"selection_forces_mae": validation},
        "metrics": {
            "molecule_gfn1": {"forces_mae": test}, "molecule_gfn1_on_gfn2_channel": {"forces_mae": 0.4},
            "crystal_gfn1": {"forces_mae": 0.5}, "molecule_gfn2": {"forces_mae": 0.4}, "theta_t_norm": 0.1,
            "molecule_gfn1_gap_parts": {"parts": {"energy_scale": {"closed": 0.2}}},
        },
    }


def data_set(validation: dict[str, float], test: dict[str, float]) -> dict:
    runs = [run(arm, seed, validation[arm] + 0.001 * seed, test[arm]) for arm in validation for seed in range(3)]
    return {"runs": runs, "summary": report.summarize(runs), "treatments": report.treatments(runs)}


def test_the_winner_is_chosen_on_validation_even_where_the_test_set_prefers_another():
    # validation prefers the penalized scale; the test molecules would prefer the fixed one
    validation = dict(zip(ARMS, [0.50, 0.52, 0.40, 0.60]))
    test = dict(zip(ARMS, [1.0, 0.9, 0.8, 0.1]))
    selection = report.select({"a": data_set(validation, test), "b": data_set(validation, test)})
    assert selection["winners"] == {"a": "penalized", "b": "penalized"}
    assert selection["default_scale_per_task"] == "penalized"


def test_without_a_common_winner_the_default_is_one_not_worse_anywhere():
    # a prefers shared, b prefers fixed; the free scale is clearly worse on b, penalized ties both winners
    first = data_set(dict(zip(ARMS, [0.50, 0.40, 0.40, 0.60])), dict(zip(ARMS, [1.0] * 4)))
    second = data_set(dict(zip(ARMS, [0.90, 0.70, 0.50, 0.50])), dict(zip(ARMS, [1.0] * 4)))
    first["runs"] = [r for r in first["runs"] if r["arm"] != "multi_task_scale_penalized"] + [
        run("multi_task_scale_penalized", s, 0.40 + 0.001 * s, 1.0) for s in range(3)]
    first["summary"] = report.summarize(first["runs"])
    selection = report.select({"a": first, "b": second})
    assert selection["winners"]["a"] in (False, "penalized")
    assert selection["winners"]["b"] in ("penalized", "fixed")
    assert selection["default_scale_per_task"] == "penalized"
    assert "no treatment wins on every data set" in selection["reason"]


def test_ties_go_to_the_former_default_then_to_the_simplest_treatment():
    # a prefers one treatment, b another, each by 0.01 with a per-seed noise of ±0.05 on the rest:
    # every treatment is within one standard error of both winners, unless it is clearly worse (+0.2)
    def noisy(winner: str, worse: tuple[str, ...] = ()) -> dict:
        runs = [run(arm, seed, 0.49 if arm == winner else 0.7 if arm in worse else 0.5 + (0.05, -0.05, 0.0)[seed], 1.0)
                for arm in ARMS for seed in range(3)]
        return {"runs": runs, "summary": report.summarize(runs), "treatments": report.treatments(runs)}

    tied = {"a": noisy("multi_task_scale_penalized"), "b": noisy("multi_task_scale_fixed")}
    assert report.select(tied)["default_scale_per_task"] is True  # the default before the study
    free_worse = {"a": noisy("multi_task_scale_penalized", ("multi_task_scale_free",)), "b": noisy("multi_task_scale_fixed")}
    assert report.select(free_worse)["default_scale_per_task"] is False  # then the simplest


def test_a_treatment_not_run_on_a_data_set_cannot_be_the_default_and_nothing_is_changed_without_evidence():
    first = data_set(dict(zip(ARMS, [0.60, 0.50, 0.55, 0.55])), dict(zip(ARMS, [1.0] * 4)))
    second = data_set({"multi_task_scale_free": 0.50, "multi_task_scale_shared": 0.60}, {a: 1.0 for a in ARMS})
    selection = report.select({"a": first, "b": second})
    assert selection["winners"] == {"a": False, "b": True}
    assert selection["default_scale_per_task"] is True and "is kept" in selection["reason"]


def test_arms_are_told_apart_by_the_treatment_their_runs_recorded():
    runs = [run("multi_task", 0, 0.5, 1.0) | {"scale_per_task": False}, run("multi_task_scale_shared", 0, 0.5, 1.0),
            run("multi_task_scale_free", 0, 0.5, 1.0), run("multi_none", 0, 0.9, 2.0)]
    assert report.treatments(runs) == {"multi_task": False, "multi_task_scale_free": True}


def test_the_channel_ratio_and_the_scale_share_of_the_gap_come_from_each_run():
    values = report.run_values(run("multi_task", 0, 0.5, 1.2))
    assert values["ratio"] == 1.2 / 0.4 and values["scale_closes"] == 0.2
