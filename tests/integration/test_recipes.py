"""Every recipe is a valid run configuration (keys, values, stages), whatever data it will read."""

from __future__ import annotations

import pytest
from conftest import REPO

from sevenomni.train.config import load_config

RECIPES = sorted(
    path for path in (REPO / "recipes").rglob("*.yaml") if path.name != "arms.yaml"
)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: str(path.relative_to(path.parents[1])))
def test_recipe_is_a_valid_config(recipe):
    config = load_config(recipe)
    assert config.stages and config.data.databases


def test_finetuning_recipes_say_what_they_do():
    by_name = {path.stem: load_config(path) for path in RECIPES if path.parent.name == "finetune"}
    assert by_name["linear_correction"].train.freeze == "all_but_linear_correction"
    assert by_name["few_structures"].stages[0].ratios  # replay of the old databases
    assert {d.baseline.label for d in by_name["delta_learning"].data.databases} == {"gfn2-xtb"}
