"""Config records of the data layer: what a database is, how it is split, how batches are drawn.

A database maps to exactly one task; several databases may map to one task, and a
domain-bridging set is simply a database assigned to another domain's task.
"""

from __future__ import annotations

from typing import Literal

from ase.data import atomic_numbers
from pydantic import Field, field_validator, model_validator

from sevenomni.core.base import DEFAULT_MIN_DISTANCE, StrictModel
from sevenomni.core.baseline import BaselineSpec
from sevenomni.core.keys import LABELS

# The config_type_weights key whose factor applies to untagged structures and unlisted types.
DEFAULT_CONFIG_TYPE = "Default"


def config_type_weight(weights: dict[str, float], config_type: str | None) -> float:
    """The loss factor of a structure of ``config_type`` (None: untagged) under a database's
    ``config_type_weights``: its own, else the :data:`DEFAULT_CONFIG_TYPE` factor, else 1."""
    default = weights.get(DEFAULT_CONFIG_TYPE, 1.0)
    return weights.get(config_type, default) if config_type is not None else default


def path_list(path: str | list[str]) -> list[str]:
    """A ``path`` setting (one path or several) as a list."""
    return [path] if isinstance(path, str) else list(path)


class SplitSpec(StrictModel):
    """Reproducible train/validation split: a seeded fraction, or a separate file/store."""

    valid_fraction: float = Field(
        0.1, ge=0.0, lt=1.0,
        description="share of the structures held out for validation (seeded)",
    )
    seed: int = Field(0, description="seed of the random split")
    valid_path: str | list[str] | None = Field(
        None,
        description="a separate validation store or file(s) instead of valid_fraction",
    )

    @model_validator(mode="after")
    def _one_way(self) -> SplitSpec:
        if self.valid_path is not None and "valid_fraction" in self.model_fields_set and self.valid_fraction > 0:
            raise ValueError("give either valid_fraction or valid_path, not both")
        return self

    @property
    def valid_paths(self) -> list[str] | None:
        """``valid_path`` as a list (None: the split draws valid_fraction instead)."""
        return None if self.valid_path is None else path_list(self.valid_path)


class DatabaseSpec(StrictModel):
    """One source of labelled structures, assigned to one task.

    The label keys and ``min_distance`` apply to raw files (ingested into a cached store). A key
    that is set must be present in every record; unset (``None``), each format's default is used:
    ``REF_*``, else the calculator's result (extxyz/ASE), or the native labels (MPtrj, SPICE,
    ``.aselmdb``). A record with two atoms nearer than ``min_distance`` Å (periodic images
    included) is invalid; 0 turns the check off.
    """

    name: str = Field(min_length=1, examples=["crystals"], description="the database's name in logs, tables and stages")
    path: str | list[str] = Field(
        examples=["crystals.extxyz"],
        description="a store, a structure file, or a list of them (relative to the config file)",
    )
    task: str = Field(min_length=1, examples=["PBE"], description="the task (channel) this database trains")
    weight: float | None = Field(None, ge=0.0, description="sampling weight in sampling mode ratio")
    energy_key: str | None = Field(
        None, min_length=1,
        description="energy label key of raw files; null: REF_energy, else the calculator's (native for "
        "MPtrj/SPICE/aselmdb)",
    )
    forces_key: str | None = Field(
        None, min_length=1,
        description="forces label key of raw files; null: REF_forces, else the calculator's",
    )
    stress_key: str | None = Field(
        None, min_length=1,
        description="stress label key of raw files; null: REF_stress, else the calculator's",
    )
    min_distance: float = Field(
        DEFAULT_MIN_DISTANCE, ge=0.0,
        description="a structure with two atoms nearer than this (Å, periodic images included) is invalid; 0: "
        "no check",
    )
    loss_weights: dict[str, float] = Field(
        default_factory=lambda: {k: 1.0 for k in LABELS},
        description="this database's factors on train.loss's energy, forces and stress weights",
    )
    config_type_weights: dict[str, float] = Field(
        default_factory=dict,
        examples=[{"Default": 1.0, "dimer": 0.1}],
        description="factor on the loss terms of this database's structures by their config_type (extxyz info "
        f"key); {DEFAULT_CONFIG_TYPE} sets the factor of untagged structures and types not listed (else 1)",
    )
    split: SplitSpec = Field(
        default_factory=SplitSpec,
        description="how this database is split into training and validation structures",
    )
    baseline: BaselineSpec | None = Field(
        None,
        description="Δ-learning: the task learns reference − baseline (gfn2-xtb, gfn1-xtb, or an ASE calculator "
        "module:Class with kwargs), computed once at ingest; its calculator channel adds the baseline back",
    )

    energy_references: Literal["fit", "isolated_atoms"] | dict[str, float] = Field(
        "fit",
        description="the task's per-element energy shifts (E0s): fit (least squares of the energies on element "
        "counts when the task is introduced), isolated_atoms (the energies of this database's isolated-atom frames; "
        "every element of the data needs one) or {element: eV}; databases of one task must agree. Isolated-atom "
        "frames (one atom, config_type IsolatedAtom or no periodic cell) never train or validate",
    )

    @field_validator("energy_references")
    @classmethod
    def _known_elements(cls, references: str | dict[str, float]) -> str | dict[str, float]:
        if isinstance(references, dict):
            unknown = sorted(symbol for symbol in references if symbol not in atomic_numbers or symbol == "X")
            if unknown:
                raise ValueError(f"energy_references: unknown element symbol(s) {unknown}")
        return references

    @field_validator("path")
    @classmethod
    def _non_empty(cls, path: str | list[str]) -> str | list[str]:
        if (isinstance(path, str) and not path) or (isinstance(path, list) and not path):
            raise ValueError("path must name at least one store or file")
        return path

    @field_validator("loss_weights")
    @classmethod
    def _known_labels(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - set(LABELS))
        if unknown:
            raise ValueError(f"unknown loss_weights keys {unknown}; allowed: {list(LABELS)}")
        negative = {k: v for k, v in weights.items() if v < 0}
        if negative:
            raise ValueError(f"loss weights must be >= 0: {negative}")
        return {k: float(weights.get(k, 1.0)) for k in LABELS}

    @field_validator("config_type_weights")
    @classmethod
    def _non_negative(cls, weights: dict[str, float]) -> dict[str, float]:
        negative = {k: v for k, v in weights.items() if v < 0}
        if negative:
            raise ValueError(f"config_type_weights must be >= 0: {negative}")
        return weights

    @property
    def paths(self) -> list[str]:
        return path_list(self.path)


class SamplingSpec(StrictModel):
    """How batches are drawn across databases.

    * ``ratio``: probability ∝ each database's ``weight`` (all must be given);
    * ``proportional``: ∝ size — an epoch then visits every structure exactly once;
    * ``temperature``: ∝ size^(1/T) (T = 1 is proportional, T → ∞ uniform over databases).

    Batches hold ``batch_size`` structures or at most ``max_atoms`` atoms (exactly one of them).
    An epoch draws ``epoch_size`` structures (default: the total size of the databases).
    """

    mode: Literal["ratio", "proportional", "temperature"] = Field(
        "proportional",
        description="ratio: ∝ each database's weight; proportional: ∝ size (an epoch visits every structure "
        "once); temperature: ∝ size^(1/temperature)",
    )
    temperature: float = Field(
        1.0, gt=0.0,
        description="T of mode temperature (1: proportional, large: uniform over databases)",
    )
    batch_size: int | None = Field(
        None, ge=1, examples=[16], description="structures per batch (give this or max_atoms)"
    )
    max_atoms: int | None = Field(None, ge=1, description="atoms per batch at most (give this or batch_size)")
    seed: int = Field(0, description="seed of the batch sampler")
    epoch_size: int | None = Field(
        None, ge=1,
        description="structures drawn per epoch; null: the total size of the databases",
    )

    @model_validator(mode="after")
    def _one_bound(self) -> SamplingSpec:
        if (self.batch_size is None) == (self.max_atoms is None):
            raise ValueError("give exactly one of batch_size and max_atoms")
        return self
