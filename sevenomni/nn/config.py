"""Model hyperparameters: one validated record that fully determines the architecture."""

from __future__ import annotations

from typing import Literal

from ase.data import atomic_numbers, chemical_symbols
from pydantic import Field, field_validator, model_validator

from sevenomni.core.base import StrictModel
from sevenomni.core.baseline import BaselineSpec
from sevenomni.nn.backend import TPBackend
from sevenomni.nn.task_names import Tasks

TaskEmbeddingSite = Literal["si1", "si2", "readout"]  # where θT may be added: two self-interactions, the readout

# Caps on every size hyperparameter, so that no config (a model file's included) can make building the
# network exhaust memory or time. Far above every published model (SevenNet: 5 layers, 128 channels).
MAX_LAYERS = 32
MAX_WIDTH = 1024  # channels, multiplicity of each hidden irrep, radial MLP and readout widths
MAX_RADIAL = 128  # radial basis functions, and radial MLP layers at most 8
MAX_RADIAL_LAYERS = 8
MAX_CUTOFF = 50.0  # Å
MAX_TASKS = 1024


def element_symbols(elements: list) -> list[str]:
    """Chemical symbols (given as symbols or atomic numbers), unique, sorted by atomic number."""
    symbols = []
    for e in elements:
        if isinstance(e, int) and 0 < e < len(chemical_symbols):
            symbols.append(chemical_symbols[e])
        elif isinstance(e, str) and e in atomic_numbers and e != "X":
            symbols.append(e)
        else:
            raise ValueError(f"unknown element {e!r}")
    if len(set(symbols)) != len(symbols):
        raise ValueError(f"elements must be unique: {symbols}")
    return sorted(symbols, key=lambda s: atomic_numbers[s])


def check_neighbor_normalization(avg_num_neighbors: float | list[float], num_layers: int) -> None:
    """One positive divisor, or one per layer."""
    values = avg_num_neighbors if isinstance(avg_num_neighbors, list) else [avg_num_neighbors]
    if isinstance(avg_num_neighbors, list) and len(values) != num_layers:
        raise ValueError(f"avg_num_neighbors has {len(values)} entries, num_layers is {num_layers}")
    if any(v <= 0 for v in values):
        raise ValueError(f"avg_num_neighbors must be positive: {avg_num_neighbors}")


class Architecture(StrictModel):
    """The network's shape: every hyperparameter except the tasks, elements and neighbour normalization.

    :class:`ModelConfig` adds those three to make a complete model; the run config's ``model``
    section (``sevenomni.train.config_sections.ModelSection``) adds them as optional, to be filled in from
    the data. One schema, so a bad value in a run config is an error before any data is read.
    """

    channels: int = Field(32, ge=1, le=MAX_WIDTH, description="multiplicity of each hidden irrep (the network's width)")
    lmax: int = Field(
        2, ge=0, le=6,
        description="highest spherical-harmonic degree of the edge features and the hidden irreps",
    )
    parity: Literal["o3", "so3"] = Field(
        "o3",
        description="o3: features carry parity (e and o irreps); so3: rotations only",
    )
    num_layers: int = Field(3, ge=1, le=MAX_LAYERS, description="interaction (message-passing) layers")
    hidden_irreps: str | None = Field(
        None,
        description="irreps of the hidden features, e.g. '64x0e+32x1o' (must hold 0e); null: channels × every "
        "l ≤ lmax",
    )
    cutoff: float = Field(5.0, gt=0, le=MAX_CUTOFF, description="radial cutoff of the neighbour graph, Å")
    num_radial: int = Field(8, ge=1, le=MAX_RADIAL, description="Bessel radial basis functions")
    radial_trainable: bool = Field(True, description="train the Bessel basis frequencies")
    radial_mlp: list[int] = Field(
        default_factory=lambda: [64, 64], max_length=MAX_RADIAL_LAYERS,
        description="hidden widths of the MLP mapping the radial basis to tensor-product weights",
    )
    envelope: Literal["polynomial", "xplor"] = Field(
        "polynomial",
        description="smooth cutoff function: polynomial (order polynomial_p) or xplor (switching from xplor_on "
        "to cutoff)",
    )
    polynomial_p: int = Field(6, ge=1, le=64, description="order p of the polynomial envelope")
    xplor_on: float | None = Field(
        None,
        description="where the xplor envelope starts switching off, Å (0 < xplor_on < cutoff; needed by "
        "envelope xplor)",
    )
    self_connection: Literal["linear", "species"] = Field(
        "species",
        description="skip path of each layer: linear, or species (one linear map per element)",
    )
    task_embedding_sites: list[TaskEmbeddingSite] = Field(
        default_factory=lambda: ["si1", "si2"],
        description="where the task embeddings θT are added: si1, si2 (the self-interactions), readout",
    )
    task_embedding_norm: bool = Field(
        False,
        description="scale-invariant θT: RMS-normalize the 0e outputs of each layer that carries θT after adding "
        "it, so the shared weights cannot amplify θT (see sevenomni.nn.task.TaskLinear)",
    )
    sh_normalize: bool = Field(True, description="normalize edge vectors before the spherical harmonics")
    scale_per_task: bool | Literal["penalized", "fixed"] = Field(
        True,
        description="the energy scale's task dependence: true (default; no treatment was better on validation "
        "on every data set tried, benchmarks/results/scale_study.md), one trained scale per task "
        "(task-specific and not penalized); false, one scale shared by all tasks; 'penalized', the shared scale times exp(s_t) "
        "with s_t a task embedding (θT: penalized by mode task, dropped on the common channel); 'fixed', one "
        "scale per task set from that task's force RMS and never trained (see sevenomni.nn.task)",
    )
    scale_per_element: bool = Field(False, description="an energy scale per element as well (on top of scale_per_task)")
    readout_hidden: int | None = Field(
        None, ge=1, le=MAX_WIDTH,
        description="width of the readout's hidden scalar layer; null: channels / 2",
    )
    dtype: Literal["float32", "float64"] = Field("float32", description="float32 or float64 weights and arithmetic")
    tp_backend: TPBackend = Field("auto", description="tensor-product implementation, see sevenomni.nn.backend")

    @field_validator("hidden_irreps")
    @classmethod
    def _valid_irreps(cls, irreps: str | None) -> str | None:
        if irreps is None:
            return None
        from e3nn import o3

        try:
            parsed = o3.Irreps(irreps)
        except (ValueError, AssertionError):
            raise ValueError(f"not an irreps string: {irreps!r}") from None
        if "0e" not in [str(ir) for _, ir in parsed]:
            raise ValueError(f"hidden_irreps must contain scalars (0e): {irreps!r}")
        if any(mul > MAX_WIDTH or ir.l > 6 for mul, ir in parsed):
            raise ValueError(f"hidden_irreps: multiplicities at most {MAX_WIDTH}, l at most 6: {irreps!r}")
        return str(parsed)

    @field_validator("radial_mlp")
    @classmethod
    def _positive_widths(cls, widths: list[int]) -> list[int]:
        if any(w < 1 or w > MAX_WIDTH for w in widths):
            raise ValueError(f"radial_mlp widths must be in 1..{MAX_WIDTH}: {widths}")
        return widths

    @field_validator("task_embedding_sites")
    @classmethod
    def _unique_sites(cls, sites: list[str]) -> list[str]:
        if len(set(sites)) != len(sites):
            raise ValueError(f"task_embedding_sites repeats a site: {sites}")
        return sites

    @model_validator(mode="after")
    def _xplor_window(self) -> Architecture:
        if self.envelope == "xplor":
            if self.xplor_on is None or not 0 < self.xplor_on < self.cutoff:
                raise ValueError("envelope 'xplor' needs 0 < xplor_on < cutoff")
        return self


class ModelConfig(Architecture):
    """Architecture of a SevenNet-MF-style multi-task NequIP network.

    ``tasks`` are the computational protocols (one output channel each); ``elements`` the
    chemical species the model knows. Everything else fixes the network's shape.
    """

    tasks: list[str] = Field(min_length=1, max_length=MAX_TASKS)
    elements: list[str] = Field(min_length=1)
    avg_num_neighbors: float | list[float] = 1.0
    baselines: dict[str, BaselineSpec] = Field(
        default_factory=dict, description="Δ-learning: per task, the baseline its channel is trained on top of"
    )
    linear_correction: bool = Field(
        False, description="a per-task scalar on the shift-free energy (see sevenomni.nn.task.LinearCorrection)"
    )
    task_elements: dict[str, list[str]] | None = Field(
        None,
        description="per task, the elements of the data it was trained on (filled in by training); a task not "
        "listed, or None (models from before this record), has no record and draws no extrapolation warnings",
    )

    @field_validator("tasks")
    @classmethod
    def _tasks_unique(cls, tasks: list[str]) -> list[str]:
        Tasks(tasks)  # the rules of task names live there
        return tasks

    @field_validator("elements", mode="before")
    @classmethod
    def _elements_as_symbols(cls, elements: list) -> list[str]:
        return element_symbols(elements)

    @field_validator("task_elements", mode="before")
    @classmethod
    def _task_elements_as_symbols(cls, task_elements: dict | None) -> dict | None:
        if not isinstance(task_elements, dict):
            return task_elements
        return {task: element_symbols(list(elements)) for task, elements in task_elements.items()}

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        check_neighbor_normalization(self.avg_num_neighbors, self.num_layers)
        unknown = [task for task in self.baselines if task not in self.tasks]
        if unknown:
            raise ValueError(f"baselines name unknown task(s) {unknown}; the tasks are {self.tasks}")
        recorded = self.task_elements or {}
        unknown = [task for task in recorded if task not in self.tasks]
        if unknown:
            raise ValueError(f"task_elements name unknown task(s) {unknown}; the tasks are {self.tasks}")
        for task, elements in recorded.items():
            foreign = [element for element in elements if element not in self.elements]
            if foreign:
                raise ValueError(f"task_elements of {task!r}: {foreign} not among the model's elements {self.elements}")
        return self

    @property
    def denominators(self) -> list[float]:
        """Per-layer divisor of the aggregated messages."""
        if isinstance(self.avg_num_neighbors, list):
            return list(self.avg_num_neighbors)
        return [float(self.avg_num_neighbors)] * self.num_layers

    @property
    def atomic_numbers(self) -> list[int]:
        return [atomic_numbers[s] for s in self.elements]

    @property
    def readout_width(self) -> int:
        """Scalars of the readout's hidden layer: ``readout_hidden``, or half the channels."""
        return self.readout_hidden or max(self.channels // 2, 1)
