"""Metrics to CSV and JSON-lines files in the run directory, and to wandb when configured."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any

from sevenomni.core.files import atomic_write

METRICS = ("initial", "train", "validation", "final")


def metric_files(run_dir: Path) -> list[Path]:
    """The files a run's metrics go to: ``{name}.csv`` and ``{name}.jsonl`` for each of :data:`METRICS`."""
    return [Path(run_dir) / f"{name}.{kind}" for name in METRICS for kind in ("csv", "jsonl")]


class MetricsLogger:
    """Appends rows to ``<run>/{name}.csv`` and ``<run>/{name}.jsonl``; mirrors them to wandb.

    Files are opened in append mode so a resumed run continues the same logs (after
    :meth:`rewind` to its checkpoint's step).
    """

    def __init__(self, run_dir: Path, wandb_settings: dict[str, Any] | None, config: dict, enabled: bool):
        self.run_dir, self.enabled = Path(run_dir), enabled
        self.wandb = None
        if enabled and wandb_settings is not None:
            try:
                import wandb
            except ImportError:
                raise ValueError("train.wandb is set but wandb is not installed: pip install wandb") from None
            settings = {"dir": str(self.run_dir), "config": config, "resume": "allow", **wandb_settings}
            self.wandb = wandb.init(**settings)

    def log(self, name: str, row: dict[str, Any], step: int) -> None:
        if name not in METRICS:
            raise ValueError(f"unknown metrics file {name!r}; one of {list(METRICS)}")
        if not self.enabled:
            return
        row = {"step": step, **row}
        append_csv_row(self.run_dir / f"{name}.csv", row)
        with (self.run_dir / f"{name}.jsonl").open("a") as handle:
            handle.write(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}) + "\n")
        if self.wandb is not None:
            prefix = f"{name}/" if name != "train" else "train/"
            label = "/".join(str(row[k]) for k in ("database", "channel") if k in row)
            self.wandb.log(
                {f"{prefix}{label + '/' if label else ''}{k}": v for k, v in row.items() if isinstance(v, (int, float))},
                step=step,
            )

    def rewind(self, step: int) -> None:
        """Forget what was logged after the checkpoint at ``step`` that a run resumes from.

        Rows of later steps go, and so does a row cut short by a kill; the final metrics go too
        (the resumed run writes them again). Each file is replaced atomically.
        """
        if not self.enabled:
            return
        for path in metric_files(self.run_dir):
            if not path.is_file():
                continue
            if path.stem == "final":
                path.unlink()
                continue
            with path.open(newline="") as handle:
                lines = re.findall(r"[^\n]*\n", handle.read())  # whole lines: a line cut short has no end
            if not lines:
                path.unlink()  # not even a whole header
                continue
            if path.suffix == ".csv":
                width = len(next(csv.reader(lines[:1]), []))
                kept = lines[:1] + [line for line in lines[1:] if csv_row_step(line, width) <= step]
            else:
                kept = [line for line in lines if jsonl_row_step(line) <= step]
            with atomic_write(path, newline="") as handle:
                handle.write("".join(kept))

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()


def append_csv_row(path: Path, row: dict[str, Any]) -> None:
    """Append ``row`` under the file's header: a missing column stays empty; a new column is added
    to the header (the file is rewritten once, atomically), so no value lands under another's name."""
    header: list[str] = []
    if path.is_file():
        with path.open(newline="") as handle:
            header = next(csv.reader(handle), [])
    new_columns = [key for key in row if key not in header]
    if new_columns and header:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        with atomic_write(path, newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=header + new_columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header + new_columns, restval="")
        if not header:
            writer.writeheader()
        writer.writerow(row)


def csv_row_step(line: str, width: int) -> float:
    """The step of a CSV row; infinity for a row that is not whole."""
    fields = next(csv.reader([line]), [])
    return as_step(fields[0]) if len(fields) == width else math.inf


def jsonl_row_step(line: str) -> float:
    """The step of a JSON-lines row; infinity for a row that is not whole."""
    try:
        return as_step(json.loads(line)["step"])
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


def as_step(value: Any) -> float:
    try:
        return int(value)
    except (TypeError, ValueError):
        return math.inf
