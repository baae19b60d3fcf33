"""The run configuration: ``model``, ``data``, ``train`` and ``stages`` sections, all validated."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from sevenomni.analysis.metrics import ERROR_METRICS
from sevenomni.base import StrictModel, validation_problems
from sevenomni.baseline import BaselineSpec
from sevenomni.data.spec import DatabaseSpec, SamplingSpec
from sevenomni.nn.config import Architecture, check_neighbor_normalization, element_symbols


class ConfigError(ValueError):
    """A run configuration that cannot be used; the message names the offending key."""


class ModelSection(Architecture):
    """The ``model`` section: an :class:`Architecture`; tasks come from the databases, elements
    and the neighbour normalization from the data unless given."""

    elements: list[str] | None = None
    avg_num_neighbors: float | list[float] | Literal["auto"] = "auto"
    init_from: str | None = None

    @field_validator("elements", mode="before")
    @classmethod
    def _elements_as_symbols(cls, elements: list | None) -> list[str] | None:
        return None if elements is None else element_symbols(elements)

    @model_validator(mode="after")
    def _neighbor_normalization(self) -> ModelSection:
        if self.avg_num_neighbors != "auto":
            check_neighbor_normalization(self.avg_num_neighbors, self.num_layers)
        return self

    @model_validator(mode="after")
    def _nothing_beside_init_from(self) -> ModelSection:
        """A model started from a checkpoint has its architecture: other keys would be ignored."""
        if self.init_from is not None:
            extra = sorted(self.model_fields_set - {"init_from", "tp_backend"})
            if extra:
                raise ValueError(f"init_from takes the architecture from the checkpoint; remove {extra}")
        return self


class DataSection(StrictModel):
    databases: list[DatabaseSpec] = Field(min_length=1)
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    num_workers: int = Field(0, ge=0)
    cache_dir: str = "runs/cache"
    statistics_sample: int = Field(2000, ge=1)

    @field_validator("databases")
    @classmethod
    def _unique_names(cls, databases: list[DatabaseSpec]) -> list[DatabaseSpec]:
        names = [d.name for d in databases]
        if len(set(names)) != len(names):
            raise ValueError(f"database names must be unique: {names}")
        return databases


class LossSection(StrictModel):
    kind: Literal["mse", "huber", "mae"] = "mse"
    huber_delta: float = Field(0.01, gt=0)
    energy: float = Field(1.0, ge=0)
    forces: float = Field(1.0, ge=0)
    stress: float = Field(0.0, ge=0)


# λ when the config gives none: the values the three-seed ablation selected on validation
# (README, "Selective-regularization ablation"; benchmarks/results/ablation_sweeps.md).
DEFAULT_STRENGTH = {"task": 1.0, "all": 1e-6, "none": 0.0}


class RegularizationSection(StrictModel):
    mode: Literal["task", "all", "none"] = "task"
    strength: float = Field(
        None, ge=0, validate_default=False,
        description="λ of (λ/2)·‖θ‖² over θT (task) or every weight (all); default: the mode's DEFAULT_STRENGTH",
    )
    function_space: float = Field(
        0.0, ge=0,
        description="λ_f of sevenomni.train.regularization.FunctionSpacePenalty: the squared gap between each "
        "structure's task channel and the common PES (0: off; one extra forward per step)",
    )

    @model_validator(mode="after")
    def _mode_default_strength(self) -> RegularizationSection:
        if self.strength is None:
            self.strength = DEFAULT_STRENGTH[self.mode]
        return self


class ScheduleSection(StrictModel):
    kind: Literal["constant", "cosine", "linear", "plateau"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    final_lr_ratio: float = Field(0.01, ge=0, le=1)
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    plateau_patience: int = Field(5, ge=0)


class OptimizerSection(StrictModel):
    kind: Literal["adam", "adamw"] = "adam"
    lr: float = Field(5e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(None, gt=0)


class FinetuneSection(StrictModel):
    """How a run started from a checkpoint (``model.init_from``) treats what the checkpoint knows."""

    keep_energy_shifts: bool = Field(
        False,
        description="keep the checkpoint's energy shifts of the tasks this run's data continues; by default they "
        "are refit to the new data (regression on the loaded model's energy residual, or the databases' "
        "energy_references when given), with the energy MAE before and after printed",
    )
    add_elements: bool = Field(
        False,
        description="extend the checkpoint with the data's elements it lacks: new rows of the species embedding, "
        "self-connections, shifts and per-element scales (existing rows kept, so predictions for the old elements "
        "are unchanged); the new elements' shifts are fitted by regression",
    )


class TrainSection(StrictModel):
    """How to train: optimizer, loss, regularization, schedule, checkpoints and logging."""

    seed: int = 0
    run_dir: str = "runs/run"
    device: str = "auto"
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads per process (None: torch's default); 1 is often fastest for small models"
    )
    freeze: Literal["none", "shared", "all_but_linear_correction"] = Field(
        "none",
        description="shared: train only θT, shifts and scales (the other channels' predictions stay fixed); "
        "all_but_linear_correction: train only one scalar per task on its shift-free energy (seed 004's linear "
        "correction; added to the model, initialized to 1)",
    )
    loss: LossSection = Field(default_factory=LossSection)
    finetune: FinetuneSection = Field(
        default_factory=FinetuneSection, description="fine-tuning options (with model.init_from)"
    )
    regularization: RegularizationSection = Field(default_factory=RegularizationSection)
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    ema_decay: float | None = Field(None, gt=0, lt=1)
    mixed_precision: bool = Field(
        False,
        description="bf16 autocast; not supported yet: e3nn's linears and tensor products fail on mixed "
        "bf16/float32 operands (tensordot), on CPU and CUDA alike",
    )
    compile: bool = Field(
        False, description="torch.compile the network; force/stress training steps stay eager (double backward)"
    )
    validate_every: int = Field(0, ge=0, description="steps between validations; 0 = every epoch/stage end")
    checkpoint_every: int = Field(50, ge=1)
    best_metric: str = Field(
        "forces_mae", description="validation metric (mean over the own channels of trained databases) that picks model_best.pt"
    )
    validation_channels: Literal["own", "all"] = "own"
    max_bad_steps: int = Field(20, ge=1)
    progress_bar: bool = True
    wandb: dict[str, Any] | None = None

    @field_validator("best_metric")
    @classmethod
    def _known_metric(cls, metric: str) -> str:
        if metric not in ERROR_METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(ERROR_METRICS)}")
        return metric

    @field_validator("device")
    @classmethod
    def _device_name(cls, device: str) -> str:
        import torch

        if device != "auto":
            try:
                torch.device(device)
            except RuntimeError:
                raise ValueError(f"not a device: {device!r}; e.g. auto, cpu, cuda, cuda:1") from None
        return device

    @field_validator("mixed_precision")
    @classmethod
    def _no_mixed_precision_yet(cls, enabled: bool) -> bool:
        if enabled:
            raise ValueError(
                "bf16 mixed precision is not supported yet: e3nn's linears and tensor products fail on mixed "
                "bf16/float32 operands; train in float32 (model.dtype)"
            )
        return enabled


class StageSection(StrictModel):
    name: str
    databases: list[str] = Field(min_length=1)
    ratios: dict[str, float] | None = None
    steps: int | None = Field(None, ge=1)
    epochs: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    schedule: ScheduleSection | None = None

    @model_validator(mode="after")
    def _length(self) -> StageSection:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError(f"stage {self.name!r}: give exactly one of 'steps' or 'epochs'")
        if self.ratios is not None and set(self.ratios) != set(self.databases):
            raise ValueError(f"stage {self.name!r}: ratios must name exactly its databases {self.databases}")
        return self


class RunConfig(StrictModel):
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection
    train: TrainSection = Field(default_factory=TrainSection)
    stages: list[StageSection] = Field(min_length=1)

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
        chosen: dict[str, tuple[str, BaselineSpec | None]] = {}
        for database in self.data.databases:
            task = database.task.lower()
            if task not in chosen:
                chosen[task] = (database.name, database.baseline)
            elif chosen[task][1] != database.baseline:
                first, baseline = chosen[task]
                raise ValueError(
                    f"databases {first!r} and {database.name!r} share task {database.task!r} but not its "
                    f"Δ-learning baseline ({baseline and baseline.label} vs {database.baseline and database.baseline.label})"
                )
        return self

    @model_validator(mode="after")
    def _one_energy_reference_per_task(self) -> RunConfig:
        """All databases of a task give it the same energy references (E0s)."""
        chosen: dict[str, DatabaseSpec] = {}
        for database in self.data.databases:
            first = chosen.setdefault(database.task.lower(), database)
            if first.energy_references != database.energy_references:
                raise ValueError(
                    f"databases {first.name!r} and {database.name!r} share task {database.task!r} but not its "
                    f"energy_references ({first.energy_references} vs {database.energy_references})"
                )
        return self

    def energy_references_of(self, task: str) -> str | dict[str, float]:
        """How ``task``'s per-element energy shifts are set: fit, isolated_atoms or {element: eV}."""
        for database in self.data.databases:
            if database.task.lower() == task.lower():
                return database.energy_references
        return "fit"

    def baseline_of(self, task: str) -> BaselineSpec | None:
        """The Δ-learning baseline of ``task``'s databases (None: they learn the reference itself)."""
        for database in self.data.databases:
            if database.task.lower() == task.lower():
                return database.baseline
        return None

    @property
    def trained_databases(self) -> set[str]:
        """Names of the databases some stage trains on (the others are evaluation-only)."""
        return {name for stage in self.stages for name in stage.databases}

    @property
    def tasks(self) -> list[str]:
        """Tasks in order of first appearance over the stages."""
        by_name = {d.name: d.task for d in self.data.databases}
        tasks: list[str] = []
        for stage in self.stages:
            for database in stage.databases:
                if by_name[database] not in tasks:
                    tasks.append(by_name[database])
        return tasks


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
    return "invalid configuration:\n" + "\n".join(f"  {line}" for line in validation_problems(error))


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
