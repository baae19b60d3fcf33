"""``sevenomni --help`` starts fast: building the whole parser imports no torch, e3nn or torch_geometric."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO

ROOT = REPO
HEAVY = ("torch", "e3nn", "torch_geometric", "ase.calculators.calculator")


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_building_every_subcommand_parser_imports_no_heavy_package():
    result = run_python(
        "import json, sys\n"
        "from sevenomni.core.arguments import all_parsers\n"
        "from sevenomni.cli import build_parser\n"
        "parsers = all_parsers(build_parser())\n"
        f"print(json.dumps({{'parsers': [p.prog for p in parsers], 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))"
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["heavy"] == []
    assert {"sevenomni train", "sevenomni eval", "sevenomni data ingest", "sevenomni dbs select",
            "sevenomni analyze embeddings", "sevenomni lammps"} <= set(found["parsers"])


def test_the_public_names_are_still_importable_from_the_package():
    result = run_python(
        "import sys, sevenomni, sevenomni.data, sevenomni.train\n"
        "assert 'torch' not in sys.modules\n"
        "from sevenomni import SevenOmniCalculator, load_model, predict, save_checkpoint, CheckpointError\n"
        "from sevenomni.data import atoms_to_graph, collate, LMDBDataset\n"
        "from sevenomni.train import ConfigError, RunConfig, load_config, WeightPenalty\n"
        "from sevenomni.model_io.loading import add_trust_pickle_argument\n"
        "print(sevenomni.build_model(['a'], ['H']).tasks)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['a']"


def test_python_m_sevenomni_help_exits_0_and_lists_the_commands():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "sevenomni", "--help"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout and "eval" in result.stdout
