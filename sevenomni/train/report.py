"""What a run tells its user, as lines of text: the start-up summary, validations, the final table."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sevenomni.core.keys import LABELS, STRESS
from sevenomni.data.sources import Database
from sevenomni.data.spec import DEFAULT_CONFIG_TYPE, config_type_weight
from sevenomni.nn import SevenOmniModel
from sevenomni.nn.task_names import CHANNEL_COLUMN
from sevenomni.train.config_sections import LossSection


def parameter_count(named: Iterable[tuple[str, torch.nn.Parameter]]) -> int:
    """How many numbers ``(name, parameter)`` pairs hold (θC, θT, all: the model's named groups)."""
    return sum(parameter.numel() for _, parameter in named)


def start_up_summary(
    model: SevenOmniModel,
    databases: list[Database],
    device: torch.device,
    world_size: int,
    loss: LossSection,
    stress_trained: bool,
) -> list[str]:
    """Device, dtype, tasks, parameter counts (θC shared, θT task embeddings), every loss weight
    (zeros included), the databases with the labels found and the weight each is trained with, and
    a hint for stress labels that are read but not trained (by any stage: ``stress_trained`` false)."""
    processes = f" × {world_size} processes" if world_size > 1 else ""
    return [
        f"device {device}{processes}, dtype {model.config.dtype}",
        f"tasks: {', '.join(model.tasks)}",
        (
            f"parameters: θC {parameter_count(model.shared_parameters()):,} shared, "
            f"θT {parameter_count(model.task_embedding_parameters()):,} in task embeddings, "
            f"{parameter_count(model.named_parameters()):,} in all"
        ),
        loss_weights_text(loss),
        *(database_line(database, model.tasks, loss) for database in databases),
        *(line for database in databases for line in config_type_lines(database)),
        *untrained_stress_hints(databases, stress_trained),
    ]


def loss_weights_text(loss: LossSection) -> str:
    """``loss (mse) weights: energy 1, forces 10, stress 0``: the kind and every weight, zeros included."""
    return f"loss ({loss.kind}) weights: " + ", ".join(f"{label} {loss_weight(loss, label):g}" for label in LABELS)


def stage_start_line(stage: str, databases: list[str], step: int, length: int, lr: float, loss: LossSection) -> str:
    """What a stage trains on and with: its databases, length (and where a resumed stage picks up), lr, loss."""
    where = f"from step {step} of {length}" if step else f"{length} steps"
    return f"stage {stage}: {', '.join(databases)}, {where}, lr {lr:g}, {loss_weights_text(loss)}"


def loss_weight(loss: LossSection, label: str, database: Database | None = None) -> float:
    """The weight of ``label`` in the loss: ``train.loss``'s, times the database's ``loss_weights``."""
    weight = getattr(loss, label)
    return weight if database is None else weight * database.spec.loss_weights.get(label, 1.0)


def database_line(database: Database, tasks: list[str], loss: LossSection) -> str:
    """A database's task, sizes, where each of its labels came from (the stores' ``label_sources``),
    the weight the loss gives it and the isolated-atom frames left out of training."""
    valid = 0 if database.valid is None else len(database.valid)
    sources = ", ".join(
        f"{label} from {source} (weight {loss_weight(loss, label, database):g})"
        for label, source in database.train.label_sources.items()
    )
    line = (
        f"database {database.spec.name}: task {tasks[database.task_index]}, "
        f"{len(database.train)} training / {valid} validation structures; {sources or 'no labels'}"
    )
    if len(database.isolated):
        mode = database.spec.energy_references
        use = "taken as energy references" if mode == "isolated_atoms" else (
            f"left out of training (energy_references: {mode if isinstance(mode, str) else 'per element'})"
        )
        line += f"; {len(database.isolated)} isolated-atom frame(s) {use}"
    return line


def config_type_lines(database: Database) -> list[str]:
    """For a database with ``config_type_weights``: its structures per config type with the loss
    factor of each, and a warning naming the listed types that none of its structures carries."""
    weights = database.spec.config_type_weights
    if not weights:
        return []
    found = Counter(database.train.config_types())
    if database.valid is not None:
        found.update(database.valid.config_types())
    counts = ", ".join(
        f"{kind or 'untagged'} ×{count} (weight {config_type_weight(weights, kind):g})"
        for kind, count in sorted(found.items(), key=lambda item: (item[0] is None, item[0] or ""))
    )
    lines = [f"database {database.spec.name}: config types {counts}"]
    absent = sorted(set(weights) - set(found) - {DEFAULT_CONFIG_TYPE})
    if absent:
        lines.append(
            f"warning: database {database.spec.name}: config_type_weights names {absent}, which none of its "
            "structures carries"
        )
    return lines


def untrained_stress_hints(databases: list[Database], stress_trained: bool) -> list[str]:
    """One line per database whose stress labels are read while no stage trains stress."""
    if stress_trained:
        return []
    return [
        f"stress labels found in {database.spec.name} but train.loss.stress is 0: they are read but not trained; "
        "set train.loss.stress: 1 to train them"
        for database in databases
        if STRESS in database.train.label_sources
    ]


def energy_shift_line(task: str, elements: list[str], shifts: np.ndarray, origin: str) -> str:
    """A task's per-element energy shifts (elements at 0 left out) and where they came from
    (``origin``, e.g. "fitted on 200 structures")."""
    values = ", ".join(f"{element} {shift:.3f}" for element, shift in zip(elements, shifts) if shift != 0)
    return f"task {task}: energy shifts {origin} (eV per atom): {values}"


def validation_line(label: str, rows: list[dict[str, Any]]) -> str:
    """The headline errors of a validation: each database on its own channel."""
    errors = [
        f"{row['database']}: E MAE {row['energy_mae']:.2f} meV/atom, F MAE {row['forces_mae']:.4f} eV/Å"
        for row in rows
        if row["own"]
    ]
    line = f"{label}: {'; '.join(errors)}"
    spread = channel_spread(rows)
    if spread is not None:
        line += f"; channel spread {spread:.4f} eV/Å"
    return line


def channel_spread(rows: list[dict[str, Any]]) -> float | None:
    """Mean RMS force difference between a database's own channel and its other channels (and the
    common PES), over the rows of a validation with ``validation_channels: all``; None without any."""
    values = [row.get("channel_spread_forces") for row in rows if not row["own"]]
    values = [value for value in values if value is not None and not math.isnan(value)]
    return sum(values) / len(values) if values else None


def final_table(rows: list[dict[str, Any]], model_path: Path, stress_trained: bool) -> list[str]:
    """Every validation row of the exported model; a note under it when stress was not trained."""
    lines = [
        f"final validation ({model_path}):",
        f"{'database':<24}{CHANNEL_COLUMN:<16}{'E MAE meV/at':>14}{'F MAE eV/Å':>12}{'F RMSE eV/Å':>13}{'σ MAE eV/Å³':>13}",
    ]
    for row in rows:
        lines.append(
            f"{row['database']:<24}{row['channel']:<16}{row['energy_mae']:>14.2f}"
            f"{row['forces_mae']:>12.4f}{row['forces_rmse']:>13.4f}{row['stress_mae']:>13.5f}"
        )
    if not stress_trained:
        lines.append("σ MAE: stress was not trained (train.loss.stress is 0), only evaluated")
    return lines


def progress_line(stage: str, step: int, length: int, loss: float, seconds_per_step: float) -> str:
    """Progress through a stage, for output that is no terminal (a batch job's log) instead of a bar."""
    return f"stage {stage}: step {step}/{length} ({100 * step / length:.0f}%), loss {loss:.4g}, {seconds_per_step:.3g} s/step"
