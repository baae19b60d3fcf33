"""What a run trains: its tasks, its databases and its model, built from the run config.

A run started from a checkpoint (``model.init_from``) keeps that model's tasks, in its order
(already trained: never re-introduced), and appends the data's new ones; the architecture is the
checkpoint's. A fresh model takes its elements and neighbour normalization from the data unless
the config gives them, and its energy scale from the force RMS of the first stage's data (with
``model.scale_per_task: fixed``, each task's scale from its own data's force RMS).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sevenomni.data.sources import Database
from sevenomni.data.statistics import average_num_neighbors, force_rms
from sevenomni.model_io.loading import load_model
from sevenomni.nn import ModelConfig, SevenOmniModel, Tasks, parameter_roles
from sevenomni.nn.elements import extend_elements
from sevenomni.train.config import RunConfig


def starting_model(config: RunConfig, trust_pickle: bool) -> SevenOmniModel | None:
    """The checkpoint ``model.init_from`` names, or None for a fresh model."""
    source = config.model.init_from
    return load_model(source, trust_pickle=trust_pickle) if source else None


def with_data_elements(config: RunConfig, start: SevenOmniModel, databases: list[Database]) -> tuple[SevenOmniModel, list[str]]:
    """The starting model, extended with the data's elements it lacks when
    ``train.finetune.add_elements`` allows (else ValueError naming them); and those elements."""
    missing = sorted({e for d in databases for e in d.train.elements} - set(start.elements))
    if not missing:
        return start, []
    if not config.train.finetune.add_elements:
        raise ValueError(
            f"element(s) {missing} not in this model's elements {start.elements}; "
            "set train.finetune.add_elements: true to extend the model with them"
        )
    return extend_elements(start, missing, seed=config.train.seed), missing


def run_tasks(config: RunConfig, start: SevenOmniModel | None) -> Tasks:
    """The starting model's tasks (if any), then the config's tasks it does not have yet."""
    known = Tasks() if start is None else start.tasks
    return known.extended(config.tasks)


def first_stage_statistic(config: RunConfig, databases: list[Database], function: Callable, *args) -> float:
    """A statistic over a seeded subsample of the first stage's training data."""
    by_name = {d.spec.name: d for d in databases}
    first = [by_name[name].train for name in config.stages[0].databases]
    return float(function(first, *args, sample=config.data.statistics_sample, seed=config.train.seed))


def build_model(
    config: RunConfig, tasks: Tasks, databases: list[Database], start: SevenOmniModel | None
) -> SevenOmniModel:
    """The model to train: ``start`` with the new tasks appended, or a fresh one sized by the data;
    either way with each task's Δ-learning baseline recorded (see :func:`record_baselines`)."""
    if start is not None:
        known = start.tasks
        for task in tasks[len(known) :]:
            start.append_task(task)
        return record_task_elements(record_baselines(start, config, known), config, databases, known).train()
    section = config.model
    elements = section.elements or sorted({element for d in databases for element in d.train.elements})
    avg = section.avg_num_neighbors
    if avg == "auto":
        avg = first_stage_statistic(config, databases, average_num_neighbors, section.cutoff)
    architecture = section.model_dump(exclude={"elements", "init_from", "avg_num_neighbors"})
    model = SevenOmniModel(ModelConfig(tasks=tasks.as_list(), elements=elements, avg_num_neighbors=avg, **architecture))
    with torch.no_grad():
        if section.scale_per_task == "fixed":
            for index, rms in enumerate(task_force_rms(config, databases, len(tasks))):
                model.energy_scale.weight[index].fill_(rms)
        elif (rms := first_stage_statistic(config, databases, force_rms)) > 0:
            model.energy_scale.weight.fill_(rms)
    return record_task_elements(record_baselines(model, config, Tasks()), config, databases, Tasks()).train()


def task_force_rms(config: RunConfig, databases: list[Database], num_tasks: int) -> list[float]:
    """Each task's force RMS over its training databases (1 for a task without forces): the
    scales of ``model.scale_per_task: fixed``."""
    values = []
    for index in range(num_tasks):
        mine = [d.train for d in databases if d.task_index == index and d.spec.name in config.trained_databases]
        try:
            rms = float(force_rms(mine, sample=config.data.statistics_sample, seed=config.train.seed)) if mine else 0.0
        except ValueError:  # no forces in this task's data
            rms = 0.0
        values.append(rms if rms > 0 else 1.0)
    return values


def record_baselines(model: SevenOmniModel, config: RunConfig, trained_before: Tasks) -> SevenOmniModel:
    """Give each task the baseline its databases declare. A task the starting model already had
    keeps its targets: a config that changes its baseline is an error."""
    configured = config.tasks
    for task in model.tasks:
        wanted = config.baseline_of(task) if task in configured else model.baseline_of(task)
        if task in trained_before and wanted != model.baseline_of(task):
            had, asked = model.baseline_of(task), wanted
            raise ValueError(
                f"task {task!r} was trained on {'reference − ' + had.label if had else 'the reference itself'}; "
                f"the config's databases give it {'baseline ' + asked.label if asked else 'no baseline'}. "
                "Use a new task name for other targets."
            )
        model.set_baseline(task, wanted)
    return model


def record_task_elements(
    model: SevenOmniModel, config: RunConfig, databases: list[Database], trained_before: Tasks
) -> SevenOmniModel:
    """Add the elements of each trained database to its task's record (``ModelConfig.task_elements``,
    what extrapolation warnings compare with). A task the starting model trained without a record
    stays without one: its earlier data is unknown."""
    for database in databases:
        task = model.tasks[database.task_index]
        if database.spec.name not in config.trained_databases:
            continue
        if task in trained_before and model.task_elements(task) is None:
            continue
        model.record_task_elements(task, database.train.elements)
    return model


def freeze(model: SevenOmniModel, mode: str) -> None:
    """Leave trainable only what ``train.freeze`` names (``none``: everything)."""
    if mode == "none":
        return
    if mode == "all_but_linear_correction":
        model.enable_linear_correction()
    for _, parameter, role in parameter_roles(model):
        if mode == "all_but_linear_correction":
            trains = parameter is model.linear_correction.weight
        else:  # shared: the task-specific parameters train (those that train at all), θC stays
            trains = role.task_specific and parameter.requires_grad
        parameter.requires_grad_(trains)


def trained_task_indices(tasks: Tasks, config: RunConfig) -> list[int] | None:
    """Indices of the tasks this run's data trains, or None when it trains all of them."""
    configured = config.tasks
    indices = [index for index, task in enumerate(tasks) if task in configured]
    return None if len(indices) == len(tasks) else indices
