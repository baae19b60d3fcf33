"""Small run configurations over subsets of the bundled tiny data set, for training tests."""

from __future__ import annotations

import copy
import csv
import signal
from pathlib import Path

import yaml
from ase.io import read, write

TINY = Path(__file__).resolve().parents[1] / "recipes" / "data" / "tiny"

BASE = {
    "model": {
        "channels": 4,
        "lmax": 1,
        "num_layers": 2,
        "cutoff": 3.5,
        "radial_mlp": [8],
        "self_connection": "linear",
        "dtype": "float64",
    },
    "data": {
        "databases": [
            {"name": "crystal", "path": "crystal.extxyz", "task": "gfn1", "split": {"valid_fraction": 0.25}},
            {"name": "molecule", "path": "molecule.extxyz", "task": "gfn2", "split": {"valid_fraction": 0.25}},
        ],
        "sampling": {"mode": "proportional", "batch_size": 4, "seed": 0},
    },
    "train": {
        "seed": 0,
        "loss": {"energy": 1.0, "forces": 10.0, "stress": 1.0},
        "optimizer": {"lr": 0.01},
        "schedule": {"kind": "constant"},
        "progress_bar": False,
        "checkpoint_every": 2,
    },
    "stages": [{"name": "both", "databases": ["crystal", "molecule"], "steps": 6}],
}


def subset(name: str, count: int, out: Path, step: int = 1, sources: list[str] | None = None) -> Path:
    """Every ``step``-th of the first structures of a bundled set (of some sources), written to ``out``."""
    structures = read(TINY / f"{name}.extxyz", ":")
    if sources is not None:
        structures = [s for s in structures if s.info["source"] in sources]
    write(out, structures[: count * step : step], format="extxyz")
    return out


def make_run(
    tmp_path: Path,
    count: int = 16,
    overrides: dict | None = None,
    crystals: list[str] | None = None,
    molecules: list[str] | None = None,
) -> dict:
    """A raw run config (dict) with small crystal and molecule sets copied under ``tmp_path``.

    Without source lists, every 9th structure (many chemistries, few of each); with them, the
    first ``count`` structures of those crystals / molecules.
    """
    step = 9 if crystals is None else 1
    subset("crystal_gfn1", count, tmp_path / "crystal.extxyz", step=step, sources=crystals)
    step = 9 if molecules is None else 1
    subset("molecule_gfn2", count, tmp_path / "molecule.extxyz", step=step, sources=molecules)
    raw = copy.deepcopy(BASE)
    for database in raw["data"]["databases"]:
        database["path"] = str(tmp_path / database["path"])
    raw["data"]["cache_dir"] = str(tmp_path / "cache")
    raw["train"]["run_dir"] = str(tmp_path / "run")
    for dotted, value in (overrides or {}).items():
        node = raw
        keys = dotted.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        if isinstance(node, list):
            node[int(keys[-1])] = value
        else:
            node[keys[-1]] = value
    return raw


def write_config(raw: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def stop_like_sigterm_after(trainer, step: int) -> None:
    """Make ``trainer`` receive SIGTERM during its optimizer step ``step``: it saves and raises
    TrainingInterrupted after that step, as a batch system's kill would make it."""
    original = trainer.train_step

    def step_then_stop(batch):
        if trainer.progress.global_step + 1 == step:
            trainer._stop_signal = signal.SIGTERM
        return original(batch)

    trainer.train_step = step_then_stop


def logged_rows(run_dir: Path, name: str = "train") -> list[dict]:
    """The rows of a run's ``{name}.csv`` (train, validation, ...), numbers as floats where they are."""
    def number(value: str):
        try:
            return float(value)
        except ValueError:
            return value

    with (Path(run_dir) / f"{name}.csv").open() as handle:
        return [{key: number(value) for key, value in row.items()} for row in csv.DictReader(handle)]
