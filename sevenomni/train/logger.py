"""Metrics to CSV and JSON-lines files in the run directory, and to wandb when configured."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Appends rows to ``<run>/{name}.csv`` and ``<run>/{name}.jsonl``; mirrors them to wandb.

    Files are opened in append mode so a resumed run continues the same logs.
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
        if not self.enabled:
            return
        row = {"step": step, **row}
        csv_path = self.run_dir / f"{name}.csv"
        new_file = not csv_path.exists()
        with csv_path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new_file:
                writer.writeheader()
            writer.writerow(row)
        with (self.run_dir / f"{name}.jsonl").open("a") as handle:
            handle.write(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}) + "\n")
        if self.wandb is not None:
            prefix = f"{name}/" if name != "train" else "train/"
            label = "/".join(str(row[k]) for k in ("database", "channel") if k in row)
            self.wandb.log(
                {f"{prefix}{label + '/' if label else ''}{k}": v for k, v in row.items() if isinstance(v, (int, float))},
                step=step,
            )

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
