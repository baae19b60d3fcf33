"""Model hyperparameters: one validated record that fully determines the architecture."""

from __future__ import annotations

from typing import Literal

from ase.data import atomic_numbers, chemical_symbols
from pydantic import Field, field_validator, model_validator

from sevenomni.base import StrictModel
from sevenomni.nn.backend import TPBackend

COMMON_CHANNEL = "common"
TASK_EMBEDDING_SITES = ("si1", "si2", "readout")


class ModelConfig(StrictModel):
    """Architecture of a SevenNet-MF-style multi-task NequIP network.

    ``tasks`` are the computational protocols (one output channel each); ``elements`` the
    chemical species the model knows. Everything else fixes the network's shape.
    """

    tasks: list[str] = Field(min_length=1)
    elements: list[str] = Field(min_length=1)
    channels: int = Field(32, ge=1)
    lmax: int = Field(2, ge=0, le=6)
    parity: Literal["o3", "so3"] = "o3"
    num_layers: int = Field(3, ge=1)
    hidden_irreps: str | None = None
    cutoff: float = Field(5.0, gt=0)
    num_radial: int = Field(8, ge=1)
    radial_trainable: bool = True
    radial_mlp: list[int] = Field(default_factory=lambda: [64, 64])
    envelope: Literal["polynomial", "xplor"] = "polynomial"
    polynomial_p: int = Field(6, ge=1)
    xplor_on: float | None = None
    self_connection: Literal["linear", "species"] = "species"
    task_embedding_sites: list[Literal["si1", "si2", "readout"]] = Field(
        default_factory=lambda: ["si1", "si2"]
    )
    sh_normalize: bool = True
    avg_num_neighbors: float | list[float] = 1.0
    scale_per_task: bool = True
    scale_per_element: bool = False
    readout_hidden: int | None = None
    dtype: Literal["float32", "float64"] = "float32"
    tp_backend: TPBackend = Field("auto", description="tensor-product implementation, see sevenomni.nn.backend")

    @field_validator("tasks")
    @classmethod
    def _tasks_unique(cls, tasks: list[str]) -> list[str]:
        lowered = [t.lower() for t in tasks]
        if any(not t.strip() for t in tasks):
            raise ValueError("task names must be non-empty")
        if COMMON_CHANNEL in lowered:
            raise ValueError(f"'{COMMON_CHANNEL}' is reserved for the common-PES channel")
        if len(set(lowered)) != len(lowered):
            raise ValueError(f"task names must be unique (case-insensitive): {tasks}")
        return tasks

    @field_validator("elements", mode="before")
    @classmethod
    def _elements_as_symbols(cls, elements: list) -> list[str]:
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
        return str(parsed)

    @field_validator("radial_mlp")
    @classmethod
    def _positive_widths(cls, widths: list[int]) -> list[int]:
        if any(w < 1 for w in widths):
            raise ValueError(f"radial_mlp widths must be positive: {widths}")
        return widths

    @field_validator("task_embedding_sites")
    @classmethod
    def _unique_sites(cls, sites: list[str]) -> list[str]:
        if len(set(sites)) != len(sites):
            raise ValueError(f"task_embedding_sites repeats a site: {sites}")
        return sites

    @model_validator(mode="after")
    def _consistent(self) -> "ModelConfig":
        if isinstance(self.avg_num_neighbors, list):
            if len(self.avg_num_neighbors) != self.num_layers:
                raise ValueError(
                    f"avg_num_neighbors has {len(self.avg_num_neighbors)} entries, "
                    f"num_layers is {self.num_layers}"
                )
        denominators = self.denominators
        if any(d <= 0 for d in denominators):
            raise ValueError(f"avg_num_neighbors must be positive: {self.avg_num_neighbors}")
        if self.envelope == "xplor":
            if self.xplor_on is None or not 0 < self.xplor_on < self.cutoff:
                raise ValueError("envelope 'xplor' needs 0 < xplor_on < cutoff")
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
    def hidden_readout(self) -> int:
        return self.readout_hidden or max(self.channels // 2, 1)
