"""The ablation's arms (``recipes/ablation/arms.yaml``), the overrides of one arm × seed run, and its data sets."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from sevenomni.experiments.checkout import DATA_ROOT, RECIPES, ROOT

TEST_SETS = {
    "crystal_gfn1": "test_crystal_gfn1.extxyz",
    "molecule_gfn2": "test_molecule_gfn2.extxyz",
    "molecule_gfn1": "test_molecule_gfn1.extxyz",
}


def load_arms(path: Path = RECIPES / "arms.yaml") -> dict[str, dict]:
    """Arm name -> {label, config (path), set (overrides)}."""
    arms = yaml.safe_load(path.read_text())
    for name, arm in arms.items():
        arm["config"] = str((path.parent / arm["config"]).resolve())
        arm.setdefault("set", [])
        arm.setdefault("label", name)
    return arms


def data_overrides(config: str | Path, data: str) -> list[str]:
    """--set overrides pointing every database of ``config`` at recipes/data/<data>/ (same file names)."""
    config = Path(config)
    raw = yaml.safe_load(config.read_text())
    overrides = []
    for index, database in enumerate(raw["data"]["databases"]):
        name = Path(database["path"]).name
        relative = os.path.relpath(DATA_ROOT / data / name, config.parent)
        overrides.append(f"data.databases.{index}.path={relative}")
    return overrides


def run_overrides(arm: dict, data: str, seed: int, steps: int | None, extra: Sequence[str]) -> list[str]:
    """Everything an arm × seed run sets on top of its config (run_dir and cache_dir excluded)."""
    overrides = list(arm["set"]) + data_overrides(arm["config"], data)
    overrides += [f"train.seed={seed}", f"data.sampling.seed={seed}", "train.progress_bar=false"]
    if steps is not None:
        overrides.append(f"stages.0.steps={steps}")
    return overrides + list(extra)


# ---------------------------------------------------------------------------------- data


# Data sets by name: <preset> (standard make-up) or <preset>_contrast (the second data set, built to
# differ; see sevenomni.experiments.data_generation). The tiny ones are committed.
DATA_SETS = ("small", "tiny", "small_contrast", "tiny_contrast")
COMMITTED_DATA = ("tiny", "tiny_contrast")


def ensure_data(data: str, workers: int) -> Path:
    """recipes/data/<data>, generated if missing (the data generator's command line, run as a module from the
    checkout so that the checkout's own generator runs, whichever sevenomni is installed)."""
    directory = DATA_ROOT / data
    if not (directory / "manifest.json").is_file():
        if data in COMMITTED_DATA:
            raise FileNotFoundError(f"{directory} is missing (it is committed; check out the repository)")
        print(f"[ablation] generating the {data} data set into {directory} (xTB labelling; this takes a while)")
        preset, _, makeup = data.partition("_")
        command = [sys.executable, "-m", "sevenomni.experiments.data_generation.cli", "--preset", preset,
                   "--makeup", makeup or "standard", "--out", str(directory), "--workers", str(workers),
                   "--no-progress"]
        subprocess.run(command, check=True, cwd=ROOT)
    return directory


def read_test_sets(directory: Path) -> dict[str, list]:
    from ase.io import read

    sets = {key: read(directory / name, ":") for key, name in TEST_SETS.items()}
    ids_gfn1 = [a.info.get("struct_id") for a in sets["molecule_gfn1"]]
    ids_gfn2 = [a.info.get("struct_id") for a in sets["molecule_gfn2"]]
    if ids_gfn1 != ids_gfn2:
        raise ValueError(f"{directory}: test_molecule_gfn1 and test_molecule_gfn2 do not hold the same structures")
    return sets
