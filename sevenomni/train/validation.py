"""Validation during training: the scoring pass of ``sevenomni eval`` over the validation splits.

Each database's validation split is scored on its own task's channel and, with
``train.validation_channels: all``, on every other introduced task's channel and on the common
PES with its own task's shifts. Graphs are built once per batch whatever the number of channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

import torch

from sevenomni.analysis.evaluate import Channel, evaluate_databases
from sevenomni.data.sources import Database
from sevenomni.nn import COMMON_CHANNEL, SevenOmniModel, Tasks

VALIDATION_BATCH_SIZE = 16


def validation_rows(
    model: SevenOmniModel,
    databases: Sequence[Database],
    tasks: Tasks,
    introduced: Sequence[str],
    channels: Literal["own", "all"],
    device: torch.device,
) -> list[dict]:
    """One row per (database, channel): the metrics of :class:`sevenomni.analysis.metrics.ErrorAccumulator`.

    Databases without a validation split, or whose task is not introduced yet, are left out.
    """
    scored = []
    for database in databases:
        own = database.own
        if database.valid is None or own not in introduced:
            continue
        chosen = [Channel(own, database.task_index, False)]
        if channels == "all":
            chosen += [Channel(task, tasks.index(task), False) for task in introduced if task != own]
            chosen.append(Channel(COMMON_CHANNEL, database.task_index, True))
        scored.append(replace(database, channels=chosen))
    if not scored:
        return []
    # The validation labels of a Δ-learning task are reference − baseline already.
    return evaluate_databases(model, scored, batch_size=VALIDATION_BATCH_SIZE, device=device, add_baselines=False).rows
