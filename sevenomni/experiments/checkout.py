"""Where a repository checkout keeps what the experiments read and write."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository: sevenomni/experiments/checkout.py
RECIPES = ROOT / "recipes" / "ablation"
DATA_ROOT = ROOT / "recipes" / "data"
RESULTS = ROOT / "benchmarks" / "results"


def shown(path: Path) -> str:
    """A path relative to the repository if it lies inside it (the runs run from the repository root)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
