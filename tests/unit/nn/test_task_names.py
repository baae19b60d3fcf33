"""The run config follows the task-name rules of ``Tasks`` at load time, before any data is read."""

from __future__ import annotations

import copy

import pytest
from training_helpers import BASE

from sevenomni.analysis.evaluate import infer_own_task
from sevenomni.nn.task_names import Tasks
from sevenomni.train.config import ConfigError, load_config


def config_with(tasks: list[str], **settings) -> dict:
    """BASE with its two databases tagged ``tasks``; ``settings`` (key: two values) set per database."""
    raw = copy.deepcopy(BASE)
    for index, (database, task) in enumerate(zip(raw["data"]["databases"], tasks)):
        database["task"] = task
        for key, values in settings.items():
            if values[index] is not None:
                database[key] = values[index]
    return raw


@pytest.mark.parametrize(("task", "rule"), [("Common", "reserved for the common-PES channel"),
                                            ("  ", "non-empty strings")])
def test_a_task_name_that_breaks_the_rules_fails_at_load(task, rule):
    with pytest.raises(ConfigError, match=rf"database 'molecule': .*{rule}"):
        load_config(raw=config_with(["gfn1", task]))


def test_spellings_of_one_task_must_agree_on_its_baseline_and_references():
    with pytest.raises(ConfigError, match=r"share task 'PBE' \(spelled 'pbe' in 'molecule'\) but not its Δ-learning"):
        load_config(raw=config_with(["PBE", "pbe"], baseline=["gfn2-xtb", None]))
    with pytest.raises(ConfigError, match=r"share task 'PBE' \(spelled 'pbe' in 'molecule'\) but not its energy_ref"):
        load_config(raw=config_with(["PBE", "pbe"], energy_references=[None, {"H": -13.6}]))
    with pytest.raises(ConfigError, match=r"share task 'gfn1' but not its Δ-learning baseline"):
        load_config(raw=config_with(["gfn1", "gfn1"], baseline=["gfn2-xtb", None]))


def test_spellings_of_one_task_are_one_task():
    config = load_config(raw=config_with(["PBE", "pbe"], baseline=["gfn2-xtb", "gfn2-xtb"]))
    assert config.tasks == ["PBE"]
    assert config.baseline_of("pbe") == config.baseline_of("PBE") is not None
    assert config.first_database_of("Pbe").name == "crystal"


def test_a_database_name_names_its_task_in_any_case():
    tasks = Tasks(["GFN1", "gfn2"])
    assert infer_own_task("test_molecule_gfn1", tasks) == "GFN1"
    assert infer_own_task("gfn1_vs_GFN2", tasks) is None
    assert infer_own_task("crystals", tasks) is None
