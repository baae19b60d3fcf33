"""The run configuration, :class:`RunConfig`: its sections (:mod:`sevenomni.train.config_sections`) checked
against each other, read from YAML with ``--set`` overrides, and written back.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from sevenomni.core.base import StrictModel, validation_problems
from sevenomni.core.baseline import BaselineSpec
from sevenomni.data.spec import DatabaseSpec
from sevenomni.nn.task_names import Tasks, same_task
from sevenomni.train.config_keys import unknown_key_message
from sevenomni.train.config_sections import (  # noqa: F401  (importable from here as before)
    DataSection,
    EarlyStoppingSection,
    FinetuneSection,
    LossSection,
    ModelSection,
    OptimizerSection,
    RegularizationSection,
    ScheduleSection,
    StageLossWeights,
    StageSection,
    TrainSection,
)


class ConfigError(ValueError):
    """A run configuration that cannot be used; the message names the offending key."""


class RunConfig(StrictModel):
    model: ModelSection = Field(
        default_factory=ModelSection,
        description="the architecture (or init_from a trained model)",
    )
    data: DataSection = Field(description="the databases and how batches are drawn from them")
    train: TrainSection = Field(
        default_factory=TrainSection,
        description="optimizer, loss, regularization, schedule, checkpoints and logging",
    )
    stages: list[StageSection] = Field(
        min_length=1,
        description="the training curriculum: stages run in order, each on some databases (at least one)",
    )

    @model_validator(mode="after")
    def _stages_name_known_databases(self) -> RunConfig:
        known = [d.name for d in self.data.databases]
        for stage in self.stages:
            unknown = [name for name in stage.databases if name not in known]
            if unknown:
                raise ValueError(f"stage {stage.name!r} names unknown database(s) {unknown}; known: {known}")
        chosen = sorted(key for key, value in self.train.finetune.model_dump().items() if value)
        if chosen and self.model.init_from is None:
            raise ValueError(f"train.finetune {chosen} applies to fine-tuning: set model.init_from")
        if self.train.freeze != "none" and self.model.init_from is None:
            raise ValueError(
                f"train.freeze: {self.train.freeze} keeps a trained model's weights as they are: set model.init_from"
            )
        return self

    @model_validator(mode="after")
    def _one_baseline_per_task(self) -> RunConfig:
        """All databases of a task learn the same targets: the same Δ-learning baseline, or none."""
        for database in self.data.databases:
            first = self.first_database_of(database.task)
            if first.baseline != database.baseline:
                raise ValueError(
                    f"databases {first.name!r} and {database.name!r} share task {shared_task(first, database)} but "
                    f"not its Δ-learning baseline ({first.baseline and first.baseline.label} vs "
                    f"{database.baseline and database.baseline.label})"
                )
        return self

    @model_validator(mode="after")
    def _one_energy_reference_per_task(self) -> RunConfig:
        """All databases of a task give it the same energy references (E0s)."""
        for database in self.data.databases:
            first = self.first_database_of(database.task)
            if first.energy_references != database.energy_references:
                raise ValueError(
                    f"databases {first.name!r} and {database.name!r} share task {shared_task(first, database)} but "
                    f"not its energy_references ({first.energy_references} vs {database.energy_references})"
                )
        return self

    def first_database_of(self, task: str) -> DatabaseSpec | None:
        """The first database of ``task`` (names matched as :class:`Tasks` matches them), None if it has none."""
        return next((d for d in self.data.databases if same_task(d.task, task)), None)

    def baseline_of(self, task: str) -> BaselineSpec | None:
        """The Δ-learning baseline of ``task``'s databases (None: they learn the reference itself)."""
        first = self.first_database_of(task)
        return None if first is None else first.baseline

    def stage_loss(self, stage: StageSection) -> LossSection:
        """The loss ``stage`` trains with: ``train.loss`` with the stage's own weights."""
        return self.train.loss.with_weights(stage.loss)

    @property
    def stress_trained(self) -> bool:
        """Whether some stage trains stress (a stress weight above 0)."""
        return any(self.stage_loss(stage).stress > 0 for stage in self.stages)

    @property
    def trained_databases(self) -> set[str]:
        """Names of the databases some stage trains on (the others are evaluation-only)."""
        return {name for stage in self.stages for name in stage.databases}

    @property
    def tasks(self) -> Tasks:
        """Tasks in order of first appearance over the stages; names that differ only in case are one
        task (the first spelling), as everywhere else (:class:`sevenomni.nn.task_names.Tasks`)."""
        by_name = {d.name: d.task for d in self.data.databases}
        return Tasks().extended(by_name[name] for stage in self.stages for name in stage.databases)


def shared_task(first: DatabaseSpec, other: DatabaseSpec) -> str:
    """The task two databases share, as messages name it: ``'PBE'``, or ``'PBE' (spelled 'pbe' in 'b')``."""
    if first.task == other.task:
        return repr(first.task)
    return f"{first.task!r} (spelled {other.task!r} in {other.name!r})"


def parse_value(text: str, dotted: str) -> Any:
    """A --set value: parsed by YAML's safe loader (numbers, booleans, lists, strings; no tags that
    construct objects); ConfigError naming the key if it is not plain YAML."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"--set {dotted}: not a plain YAML value ({problem}): {text!r}") from None


def apply_override(raw: dict, assignment: str) -> None:
    """Apply ``a.b.c=value`` (list items by index: ``data.databases.0.weight=2``) to a raw config."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    dotted, value = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    node: Any = raw
    for depth, key in enumerate(keys[:-1]):
        where = ".".join(keys[: depth + 1])
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ConfigError(f"--set {dotted}: {where} is not a valid list index")
            node = node[int(key)]
        else:
            node = node.setdefault(key, {})
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"--set {dotted}: {where} is not a section")
    last = keys[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"--set {dotted}: {last} is not a valid list index")
        node[int(last)] = parse_value(value, dotted)
    else:
        node[last] = parse_value(value, dotted)


def format_validation_error(error: ValidationError) -> str:
    """One line per problem; an unknown key with the closest valid keys (see :mod:`.config_keys`)."""
    lines = []
    for item, line in zip(error.errors(), validation_problems(error)):
        if item["type"] == "extra_forbidden":
            line = line.removesuffix(item["msg"]) + unknown_key_message(RunConfig, item["loc"])
        lines.append(line)
    return "invalid configuration:\n" + "\n".join(f"  {line}" for line in lines)


def load_config(path: str | Path | None = None, overrides: list[str] = (), raw: dict | None = None) -> RunConfig:
    """Read a YAML run config (or a raw dict), apply ``--set`` overrides and validate."""
    if raw is None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}") from None
        base = path.parent
    else:
        base = Path.cwd()
    if not isinstance(raw, dict):
        raise ConfigError("the configuration must be a mapping with model/data/train/stages sections")
    raw = copy.deepcopy(raw)
    for assignment in overrides:
        apply_override(raw, assignment)
    try:
        config = RunConfig(**raw)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error)) from None
    init_from = config.model.init_from
    if init_from is not None and (base / init_from).exists():
        config.model.init_from = str((base / init_from).resolve())
    for database in config.data.databases:
        database.path = resolve_paths(database.path, base)
        if database.split.valid_path is not None:
            database.split.valid_path = resolve_paths(database.split.valid_path, base)
    return config


def resolve_paths(paths: str | list[str], base: Path) -> str | list[str]:
    """Relative data paths are taken relative to the config file."""
    if isinstance(paths, list):
        return [str((base / p).resolve()) for p in paths]
    return str((base / paths).resolve())


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write ``config`` as YAML, every default filled in, that :func:`load_config` reads back to the same run.

    ``run_dir`` and ``cache_dir`` are written absolute, so the file works from any directory.
    Keys that the config validates as given-but-unused are left out: the architecture beside
    ``model.init_from`` and ``split.valid_fraction`` beside ``split.valid_path``.
    """
    raw = config.model_dump(mode="json")
    if config.model.init_from is not None:
        raw["model"] = {"init_from": config.model.init_from}
    for database in raw["data"]["databases"]:
        if database["split"]["valid_path"] is not None:
            del database["split"]["valid_fraction"]
    raw["train"]["run_dir"] = str(Path(config.train.run_dir).resolve())
    raw["data"]["cache_dir"] = str(Path(config.data.cache_dir).resolve())
    Path(path).write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
