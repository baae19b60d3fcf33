"""The sections of a run configuration, each validated on its own: ``model``, ``data``, ``train`` (with its
loss, regularization, schedule, optimizer, fine-tuning and early-stopping parts) and the ``stages``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from sevenomni.analysis.metrics import ERROR_METRICS
from sevenomni.core.base import StrictModel
from sevenomni.data.spec import DatabaseSpec, SamplingSpec
from sevenomni.nn.config import Architecture, check_neighbor_normalization, element_symbols
from sevenomni.nn.task_names import check_task_name


class ModelSection(Architecture):
    """The ``model`` section: an :class:`Architecture`; tasks come from the databases, elements
    and the neighbour normalization from the data unless given."""

    elements: list[str] | None = Field(
        None,
        description="chemical symbols (or atomic numbers) the model knows; null: the elements found in the "
        "databases",
    )
    avg_num_neighbors: float | list[float] | Literal["auto"] = Field(
        "auto",
        description="message normalization: one number, one per layer, or auto (measured on the training data)",
    )
    init_from: str | None = Field(
        None,
        description="start from this model (any source load_model takes: file, run directory, SevenNet "
        "shortcut); the architecture is then the checkpoint's: delete the other model keys",
    )

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
    databases: list[DatabaseSpec] = Field(
        min_length=1,
        description="the labelled sources, each assigned to one task (at least one)",
    )
    sampling: SamplingSpec = Field(
        description="how batches are drawn across databases; batch_size or max_atoms is required",
    )
    num_workers: int = Field(
        0, ge=0,
        description="DataLoader worker processes building graphs (0: in the training process)",
    )
    cache_dir: str = Field("runs/cache", description="where raw files are ingested into stores, once, and reused")
    statistics_sample: int = Field(
        2000, ge=1,
        description="structures sampled to measure avg_num_neighbors, force RMS and energy shifts",
    )

    @field_validator("databases")
    @classmethod
    def _unique_names(cls, databases: list[DatabaseSpec]) -> list[DatabaseSpec]:
        names = [d.name for d in databases]
        if len(set(names)) != len(names):
            raise ValueError(f"database names must be unique: {names}")
        return databases

    @field_validator("databases")
    @classmethod
    def _task_names(cls, databases: list[DatabaseSpec]) -> list[DatabaseSpec]:
        """Every task name follows the rules of :class:`Tasks` (checked here, before any data is read)."""
        for database in databases:
            try:
                check_task_name(database.task)
            except ValueError as error:
                raise ValueError(f"database {database.name!r}: {error}") from None
        return databases


class LossSection(StrictModel):
    kind: Literal["mse", "huber", "mae"] = Field(
        "mse",
        description="per-component error: mse, huber (with huber_delta) or mae",
    )
    huber_delta: float = Field(0.01, gt=0, description="δ of the Huber loss")
    energy: float = Field(1.0, ge=0, description="weight of the per-atom energy error (0: not trained)")
    forces: float = Field(1.0, ge=0, description="weight of the force error (0: not trained)")
    stress: float = Field(
        0.0, ge=0,
        description="weight of the stress error; 0 (the default): stress labels are read and evaluated but not "
        "trained",
    )

    def with_weights(self, weights: StageLossWeights | None) -> LossSection:
        """This loss with the weights a stage gives (``stages[].loss``); the others, kind and δ kept."""
        return self if weights is None else self.model_copy(update=weights.model_dump(exclude_none=True))


class StageLossWeights(StrictModel):
    """A stage's label weights (``stages[].loss``): each given one replaces ``train.loss``'s for that stage."""

    energy: float | None = Field(None, ge=0, description="this stage's energy weight; null: train.loss.energy")
    forces: float | None = Field(None, ge=0, description="this stage's force weight; null: train.loss.forces")
    stress: float | None = Field(None, ge=0, description="this stage's stress weight; null: train.loss.stress")

    @model_validator(mode="before")
    @classmethod
    def _kind_is_global(cls, raw: Any) -> Any:
        given = [key for key in ("kind", "huber_delta") if isinstance(raw, dict) and key in raw]
        if given:
            raise ValueError(
                f"{' and '.join(given)} apply to the whole run: set them in train.loss, not in a stage's loss "
                "(a stage sets only the weights energy, forces and stress)"
            )
        return raw


def known_metric(metric: str) -> str:
    """``metric`` if it is a validation error metric, else a ValueError naming the choices."""
    if metric not in ERROR_METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(ERROR_METRICS)}")
    return metric


class EarlyStoppingSection(StrictModel):
    """When a stage ends before its length: its validation score stopped improving."""

    patience: int = Field(
        ge=1, examples=[10],
        description="validations in a row without an improvement of more than min_delta after which the stage "
        "ends (the next stage starts)",
    )
    min_delta: float = Field(
        0.0, ge=0, description="the least decrease of the validation score that counts as an improvement"
    )
    metric: str | None = Field(
        None,
        description="validation metric (mean over the own channels of trained databases) watched; null: "
        "train.best_metric",
    )

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str | None) -> str | None:
        return metric if metric is None else known_metric(metric)


# λ when the config gives none: the values the three-seed ablation selected on validation
# (README, "Selective-regularization ablation"; benchmarks/results/ablation_sweeps.md).
DEFAULT_STRENGTH = {"task": 1.0, "all": 1e-6, "none": 0.0}


class RegularizationSection(StrictModel):
    mode: Literal["task", "all", "none"] = Field(
        "task",
        description="which weights the L2 penalty keeps small: task (the task embeddings θT), all (every "
        "weight) or none",
    )
    strength: float | None = Field(
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
    kind: Literal["constant", "cosine", "linear", "plateau"] = Field(
        "cosine",
        description="learning-rate schedule: constant, cosine or linear decay to final_lr_ratio × lr, or "
        "plateau (reduce on a validation plateau)",
    )
    warmup_steps: int = Field(0, ge=0, description="steps of linear warm-up from 0 to lr")
    final_lr_ratio: float = Field(
        0.01, ge=0, le=1,
        description="learning rate at the end of a cosine or linear schedule, as a fraction of lr",
    )
    plateau_factor: float = Field(
        0.5, gt=0, lt=1,
        description="factor on the learning rate when the validation score plateaus (kind plateau)",
    )
    plateau_patience: int = Field(
        5, ge=0,
        description="validations without improvement before the plateau schedule lowers the rate",
    )


class OptimizerSection(StrictModel):
    kind: Literal["adam", "adamw"] = Field("adam", description="adam or adamw")
    lr: float = Field(5e-3, gt=0, description="learning rate (a stage's lr overrides it)")
    weight_decay: float = Field(0.0, ge=0, description="the optimizer's weight decay (decoupled for adamw)")
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this; null: no clipping")


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

    seed: int = Field(
        0,
        description="seed of the model's initialization, the splits' statistics samples and the run's random "
        "numbers",
    )
    run_dir: str = Field("runs/run", description="directory of the run's checkpoints, models, config, log and metrics")
    device: str = Field(
        "auto",
        description="auto (cuda if available), cpu, cuda, cuda:1, … (also: sevenomni train --device)",
    )
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads per process (None: torch's default); 1 is often fastest for small models"
    )
    freeze: Literal["none", "shared", "all_but_linear_correction"] = Field(
        "none",
        description="shared: train only θT, shifts and scales (the other channels' predictions stay fixed); "
        "all_but_linear_correction: train only one scalar per task on its shift-free energy (a linear "
        "correction of the task's energies; added to the model, initialized to 1)",
    )
    loss: LossSection = Field(default_factory=LossSection, description="loss kind and the weight of each label")
    finetune: FinetuneSection = Field(
        default_factory=FinetuneSection, description="fine-tuning options (with model.init_from)"
    )
    regularization: RegularizationSection = Field(
        default_factory=RegularizationSection,
        description="selective L2 regularization (of the task embeddings θT by default)",
    )
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection, description="optimizer and learning rate")
    schedule: ScheduleSection = Field(
        default_factory=ScheduleSection,
        description="learning-rate schedule (a stage may give its own)",
    )
    ema_decay: float | None = Field(
        None, gt=0, lt=1,
        description="exponential moving average of the weights (e.g. 0.999), used for validation and the "
        "exported models; null: off",
    )
    radial_precision: Literal["model", "bfloat16"] = Field(
        "model",
        description="the radial networks' arithmetic: 'model' (model.dtype) or 'bfloat16' (autocast around "
        "them only; tensor products, gates and readout stay in model.dtype)",
    )
    tf32: bool = Field(
        False,
        description="let CUDA matmuls and convolutions use TF32 (Ampere and newer; ~3 significant digits in "
        "their products, faster); off: full float32. No effect on the CPU",
    )
    compile: bool = Field(
        False, description="torch.compile the network; force/stress training steps stay eager (double backward)"
    )
    validate_every: int = Field(0, ge=0, description="steps between validations; 0 = every epoch/stage end")
    early_stopping: EarlyStoppingSection | None = Field(
        None,
        description="{patience: N, min_delta: x, metric: m}: end a stage once its validation score (metric, "
        "default best_metric) has not improved by more than min_delta for patience validations in a row; the next "
        "stage starts, model_best.pt keeps the best model. Needs validate_every > 0; each stage counts afresh and "
        "--resume continues the count; null: every stage runs its full length",
    )
    checkpoint_every: int = Field(50, ge=1, description="steps between checkpoints (last.pt)")
    best_metric: str = Field(
        "forces_mae", description="validation metric (mean over the own channels of trained databases) that picks model_best.pt"
    )
    validation_channels: Literal["own", "all"] = Field(
        "own",
        description="own: validate each database on its own task's channel; all: on every channel and common",
    )
    max_bad_steps: int = Field(
        20, ge=1,
        description="consecutive steps with a non-finite loss or gradient before training stops as diverged",
    )
    progress_bar: bool = Field(True, description="a progress bar on a terminal (batch jobs get progress lines)")
    wandb: dict[str, Any] | None = Field(
        None,
        description="keyword arguments of wandb.init to log to Weights & Biases; null: off",
    )

    @field_validator("best_metric")
    @classmethod
    def _known_metric(cls, metric: str) -> str:
        return known_metric(metric)

    @model_validator(mode="after")
    def _early_stopping_validates_within_stages(self) -> TrainSection:
        if self.early_stopping is not None and self.validate_every == 0:
            raise ValueError(
                "train.early_stopping needs train.validate_every > 0 (steps between validations): it counts "
                "validations within a stage, and validate_every 0 validates only at epoch and stage ends"
            )
        return self

    @property
    def early_stopping_metric(self) -> str:
        """The validation metric early stopping watches: its own, else the one that picks model_best.pt."""
        return (self.early_stopping and self.early_stopping.metric) or self.best_metric

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


class StageSection(StrictModel):
    name: str = Field(examples=["main"], description="the stage's name in logs and checkpoints")
    databases: list[str] = Field(
        min_length=1, examples=[["crystals"]], description="names of the databases this stage trains on"
    )
    ratios: dict[str, float] | None = Field(
        None,
        description="sampling ratio per database of this stage (every database named); null: data.sampling "
        "decides",
    )
    steps: int | None = Field(None, ge=1, description="length of the stage in optimizer steps (give this or epochs)")
    epochs: int | None = Field(None, ge=1, examples=[100], description="length of the stage in epochs (give this or steps)")
    lr: float | None = Field(None, gt=0, description="this stage's learning rate; null: train.optimizer.lr")
    schedule: ScheduleSection | None = Field(
        None,
        description="this stage's learning-rate schedule; null: train.schedule",
    )
    loss: StageLossWeights | None = Field(
        None,
        description="{energy: x, forces: y, stress: z}: this stage's loss weights, e.g. a last stage with a higher "
        "energy weight; a weight not given is train.loss's; kind and huber_delta are train.loss's only; null: "
        "train.loss",
    )

    @model_validator(mode="after")
    def _length(self) -> StageSection:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError(f"stage {self.name!r}: give exactly one of 'steps' or 'epochs'")
        if self.ratios is not None and set(self.ratios) != set(self.databases):
            raise ValueError(f"stage {self.name!r}: ratios must name exactly its databases {self.databases}")
        return self
