"""The metrics a training run logged (``train.jsonl``; ``initial.jsonl`` and ``validation.jsonl``,
the validations at step 0 and later), read back as arrays.

The JSON-lines twins are read rather than the CSV files: each of their rows names its own keys,
so a row with a missing term (a batch without stress labels has no ``loss_stress``) stays aligned.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class RunHistory:
    """Per-step training columns, validation series per (database, channel), stage starts."""

    train: dict[str, np.ndarray]
    validation: dict[tuple[str, str], dict[str, np.ndarray]]
    own: dict[tuple[str, str], bool]
    stage_starts: list[tuple[int, str]]


def _rows(path: Path) -> list[dict]:
    rows = []
    with path.open() as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise ValueError(f"{path}: line {number} is not valid JSON") from None
    return rows


def _column(rows: list[dict], key: str) -> np.ndarray:
    return np.array([math.nan if row.get(key) is None else float(row[key]) for row in rows])


def read_history(run_dir: str | Path) -> RunHistory:
    """Read a run directory's logs. A step logged twice (a run resumed from an earlier
    checkpoint) keeps its last row. Raises FileNotFoundError naming a missing ``train.jsonl``."""
    run_dir = Path(run_dir)
    train_path = run_dir / "train.jsonl"
    if not train_path.is_file():
        raise FileNotFoundError(f"{train_path}: no training log (is {run_dir} a sevenomni run directory?)")
    by_step = {int(row["step"]): row for row in _rows(train_path)}
    rows = [by_step[step] for step in sorted(by_step)]
    columns = list(dict.fromkeys(key for row in rows for key in row if key not in ("step", "stage", "epoch")))
    train = {"step": _column(rows, "step")} | {column: _column(rows, column) for column in columns}
    stage_starts, previous = [], None
    for row in rows:
        if row.get("stage") != previous:
            previous = row.get("stage")
            stage_starts.append((int(row["step"]), previous))
    series: dict[tuple[str, str], dict[int, dict]] = {}
    own: dict[tuple[str, str], bool] = {}
    logged = [run_dir / "initial.jsonl", run_dir / "validation.jsonl"]  # step 0, then every validation
    for row in (row for path in logged if path.is_file() for row in _rows(path)):
        key = (row["database"], row["channel"])
        series.setdefault(key, {})[int(row["step"])] = row
        own[key] = bool(row.get("own"))
    validation = {}
    for key, by_step in series.items():
        ordered = [by_step[step] for step in sorted(by_step)]
        validation[key] = {name: _column(ordered, name) for name in ("step", "energy_mae", "energy_cmae", "forces_mae")}
    return RunHistory(train, validation, own, stage_starts)
