"""``sevenomni train --print-config``: a complete commented config generated from the config records."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import yaml
from ase.build import bulk
from pydantic import BaseModel

from sevenomni.cli import main
from sevenomni.train.config import RunConfig, load_config
from sevenomni.train.config_keys import record_class
from sevenomni.train.config_template import config_template


def every_field(record: type[BaseModel], prefix: str = "", seen: set | None = None):
    """(dotted key, field) of every key of the run config, nested records included."""
    seen = set() if seen is None else seen
    for name, field in record.model_fields.items():
        yield prefix + name, field
        nested = record_class(field.annotation)
        if nested is not None and nested not in seen:
            seen.add(nested)
            yield from every_field(nested, f"{prefix}{name}.", seen)


def leaf_keys(node, prefix: str = "") -> set[str]:
    if isinstance(node, dict):
        return {key for name, value in node.items() for key in leaf_keys(value, f"{prefix}{name}.")} | (
            {prefix[:-1]} if prefix else set())
    if isinstance(node, list) and node and isinstance(node[0], dict):
        return {prefix[:-1]} | leaf_keys(node[0], prefix)
    return {prefix[:-1]}


def test_every_config_field_has_a_description():
    missing = [key for key, field in every_field(RunConfig) if not (field.description or "").strip()]
    assert missing == []


def test_print_config_prints_the_template_and_exits(capsys):
    assert main(["train", "--print-config"]) == 0
    assert capsys.readouterr().out == config_template()


def test_the_template_names_every_key_with_its_description_and_default():
    template = config_template()
    shown = leaf_keys(yaml.safe_load(template))
    expected = {key for key, _ in every_field(RunConfig)} - {"data.databases.baseline.calculator",
                                                             "data.databases.baseline.kwargs",
                                                             "data.databases.baseline.name",
                                                             "stages.schedule.kind", "stages.schedule.warmup_steps",
                                                             "stages.schedule.final_lr_ratio",
                                                             "stages.schedule.plateau_factor",
                                                             "stages.schedule.plateau_patience",
                                                             "stages.loss.energy", "stages.loss.forces",
                                                             "stages.loss.stress",
                                                             "train.early_stopping.patience",
                                                             "train.early_stopping.min_delta",
                                                             "train.early_stopping.metric"}
    assert expected <= shown  # optional records left null (a baseline, a stage's schedule and loss, early
    # stopping) show as one key
    lines = template.splitlines()
    at = lines.index("    stress: 0.0")
    assert lines[at - 1].strip() == ("# weight of the stress error; 0 (the default): stress labels are read and "
                                     "evaluated but not trained")
    assert "  cutoff: 5.0" in lines and "    lr: 0.005" in lines


@pytest.mark.parametrize("edit", [False, True])
def test_the_template_parses_back_into_a_valid_config_once_a_database_is_filled_in(tmp_path, edit):
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.info["REF_energy"] = -3.0
    atoms.arrays["REF_forces"] = np.zeros((1, 3))
    ase.io.write(tmp_path / "cu.extxyz", [atoms] * 4)
    text = config_template().replace("path: crystals.extxyz", f"path: {tmp_path / 'cu.extxyz'}")
    if edit:  # the same file with the keys a user changes first
        text = text.replace("name: crystals", "name: cu").replace("databases: [crystals]", "databases: [cu]")
        text = text.replace("    stress: 0.0", "    stress: 1.0")
    config_file = tmp_path / "run.yaml"
    config_file.write_text(text)
    config = load_config(config_file)
    assert config.data.databases[0].paths == [str(tmp_path / "cu.extxyz")]
    assert config.train.loss.stress == (1.0 if edit else 0.0)
    defaults = RunConfig(data=config.data, stages=config.stages)
    assert config.model == defaults.model and config.train == defaults.train.model_copy(
        update={"loss": config.train.loss})
