"""Errors that say what is there (issue 25, friction 8): did-you-mean for config keys, flags and
subcommands; MACE's ``--flag_name`` spellings; ``train --device``; missing label keys in eval."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import yaml
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

from sevenomni.cli import main
from sevenomni.train.config import ConfigError, load_config

MINIMAL = {
    "data": {"databases": [{"name": "crystals", "path": "crystals.extxyz", "task": "PBE"}],
             "sampling": {"batch_size": 4}},
    "stages": [{"name": "main", "databases": ["crystals"], "steps": 2}],
}


def config_error(raw: dict, overrides: list[str] = ()) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config(raw=raw, overrides=list(overrides))
    return str(raised.value)


def test_a_typo_in_a_config_key_names_the_closest_keys_of_its_level():
    raw = {**MINIMAL, "train": {"optimizer": {"lrr": 0.01}, "los": {}}}
    message = config_error(raw)
    assert "train.optimizer.lrr: unknown key (did you mean lr?)" in message
    assert "keys here: kind, lr, weight_decay, grad_clip" in message
    assert "train.los: unknown key (did you mean loss?)" in message


def test_a_typo_given_with_set_is_answered_the_same_way():
    message = config_error(MINIMAL, ["train.loss.stres=1", "data.databases.0.energy_kye=E"])
    assert "train.loss.stres: unknown key (did you mean stress?)" in message
    assert "data.databases.0.energy_kye: unknown key (did you mean energy_key?)" in message


@pytest.mark.parametrize(("where", "key", "sevenomni_key"), [
    ("train", "energy_weight", "train.loss.energy"),
    ("train", "forces_weight", "train.loss.forces"),
    ("train", "stress_weight", "train.loss.stress"),
    ("train", "is_train_stress", "train.loss.stress"),
    ("train", "lr", "train.optimizer.lr"),
    ("train", "max_num_epochs", "stages[].epochs"),
    ("train", "batch_size", "data.sampling.batch_size"),
    ("model", "r_max", "model.cutoff"),
    ("model", "num_channels", "model.channels"),
    ("model", "channel", "model.channels"),
    ("model", "max_L", "model.lmax"),
    ("model", "num_convolution_layer", "model.num_layers"),
    ("train", "model", "model, a top-level section"),
    ("train", "cutoff", "model.cutoff"),
    ("data", "E0s", "data.databases[].energy_references"),
])
def test_mace_and_sevenn_keys_are_answered_with_the_sevenomni_key(where, key, sevenomni_key):
    raw = {**MINIMAL, where: {**MINIMAL.get(where, {}), key: 1}}
    message = config_error(raw)
    assert f"{where}.{key}: unknown key" in message and f"MACE/SevenNet's {key} → {sevenomni_key}" in message


def test_a_missing_sampling_section_is_named():
    raw = {**MINIMAL, "data": {"databases": MINIMAL["data"]["databases"]}}
    assert "data.sampling: Field required" in config_error(raw)


@pytest.mark.parametrize(("argv", "usage", "expected"), [
    (["tran"], "usage: sevenomni [", "invalid choice: 'tran'"),
    (["data", "ingset"], "usage: sevenomni data [", "(did you mean ingest?)"),
    (["eval", "model.pt", "d.extxyz", "--batch-sise", "4"], "usage: sevenomni eval [",
     "unrecognized arguments: --batch-sise (did you mean --batch-size?), 4"),
    (["train", "c.yaml", "--devise", "cpu"], "usage: sevenomni train [", "--devise (did you mean --device?)"),
])
def test_an_unknown_subcommand_or_flag_names_the_closest_and_the_usage_of_its_command(argv, usage, expected, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.startswith(usage) and expected in err
    if argv == ["tran"]:
        assert "(did you mean train?)" in err


def test_every_flag_takes_its_mace_spelling_with_underscores(tmp_path, capsys):
    # --batch_size, --cache_dir, --energy_key (eval) and --trust_pickle are read as the hyphenated flags
    with pytest.raises(SystemExit) as exited:
        main(["eval", "--batch_size", "3", "--cache_dir", str(tmp_path), "--energy_key", "E", "--trust_pickle",
              "--help"])
    assert exited.value.code == 0
    from sevenomni.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["eval", "m.pt", "d.xyz", "--batch_size=3", "--energy_key", "E", "--trust_pickle"])
    assert (args.batch_size, args.energy_key, args.trust_pickle) == (3, "E", True)
    args = parser.parse_args(["train", "c.yaml", "--set", "train.max_bad_steps=3", "--trust_pickle"])
    assert args.set == ["train.max_bad_steps=3"] and args.trust_pickle  # values keep their underscores
    assert parser.normalise_flags(["--energy_key", "--no_such_flag", "--", "--energy_key"]) == [
        "--energy-key", "--no_such_flag", "--", "--energy_key"]  # unknown flags and anything after -- stay
    args = parser.parse_args(["data", "ingest", "a_b.xyz", "--out", "s", "--allow_missing_energy", "--min_distance=0"])
    assert args.allow_missing_energy and args.min_distance == 0 and args.sources == ["a_b.xyz"]


def test_train_device_sets_train_device(tmp_path, monkeypatch):
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump(MINIMAL))
    started = {}

    class RecordingTrainer:
        def __init__(self, config, **_):
            started["device"] = config.train.device

        def run(self):
            started["ran"] = True

    monkeypatch.setattr("sevenomni.train.trainer.Trainer", RecordingTrainer)
    assert main(["train", str(config_file), "--device", "cpu"]) == 0
    assert started == {"device": "cpu", "ran": True}


def test_eval_with_a_missing_label_key_lists_the_keys_the_record_has(tmp_path, capsys):
    from analysis_helpers import tiny_model

    from sevenomni import save_checkpoint

    save_checkpoint(tiny_model(), tmp_path / "model.pt")
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.info["REF_energy"] = -10.0
    atoms.arrays["REF_forces"] = np.zeros((len(atoms), 3))
    atoms.calc = SinglePointCalculator(atoms, energy=-9.0)
    ase.io.write(tmp_path / "si.extxyz", [atoms])
    code = main(["eval", str(tmp_path / "model.pt"), str(tmp_path / "si.extxyz"), "--energy_key", "DFT_energy",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "eval"), "--workers", "0", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "no energy under the key 'DFT_energy'" in err and "'REF_energy'" in err
