"""Δ-learning baselines: a cheap method whose energy, forces and stress a task learns on top of.

A database with ``baseline: gfn2-xtb`` (or any ASE calculator, ``{calculator: module:Class,
kwargs: {...}}``) is stored with targets reference − baseline, computed once at ingest; the model
records the baseline of each task it trained that way, and its calculator channel returns
model + baseline. Any ASE calculator works; the shortcuts name the xTB methods of ``tblite``.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

import numpy as np
from ase import Atoms
from pydantic import Field, field_validator, model_validator

from sevenomni.core.base import StrictModel

# name -> (calculator, keyword arguments)
SHORTCUTS: dict[str, tuple[str, dict[str, Any]]] = {
    "gfn2-xtb": ("tblite.ase:TBLite", {"method": "GFN2-xTB", "verbosity": 0}),
    "gfn1-xtb": ("tblite.ase:TBLite", {"method": "GFN1-xTB", "verbosity": 0}),
}
INSTALL_HINTS = {"tblite": "pip install tblite (or the project's data extra)", "dftd3": "pip install dftd3"}


class BaselineError(ValueError):
    """A baseline that cannot be built or that fails on a structure."""


class BaselineSpec(StrictModel):
    """An ASE calculator by import path and keyword arguments; ``name`` is what logs show.

    Written in a config as a shortcut (``gfn2-xtb``, ``gfn1-xtb``), a bare ``module:Class``, or a
    mapping with ``calculator`` and ``kwargs`` (and optionally ``name``).
    """

    calculator: str = Field(description="ASE calculator as module:Class (or a shortcut: gfn2-xtb, gfn1-xtb)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the calculator")
    name: str | None = Field(None, description="what logs show; null: the calculator")

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if value.lower() in SHORTCUTS:
            calculator, kwargs = SHORTCUTS[value.lower()]
            return {"calculator": calculator, "kwargs": dict(kwargs), "name": value.lower()}
        return {"calculator": value}

    @field_validator("calculator")
    @classmethod
    def _import_path(cls, calculator: str) -> str:
        module, colon, attribute = calculator.partition(":")
        if not colon or not module or not attribute:
            shortcuts = ", ".join(SHORTCUTS)
            raise ValueError(f"baseline {calculator!r}: give one of {shortcuts} or an ASE calculator as module:Class")
        return calculator

    @property
    def label(self) -> str:
        return self.name or self.calculator


def build_calculator(calculator: str, kwargs: dict[str, Any] | None = None, what: str = "calculator"):
    """An ASE calculator from ``module:Class`` and keyword arguments, with errors that say what is missing."""
    module_name, _, attribute = calculator.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        package = module_name.split(".")[0]
        hint = INSTALL_HINTS.get(package, f"install the package that provides {module_name}")
        raise BaselineError(f"{what} {calculator}: cannot import {module_name} ({error}); {hint}") from None
    try:
        factory = getattr(module, attribute)
    except AttributeError:
        raise BaselineError(f"{what} {calculator}: {module_name} has no {attribute!r}") from None
    try:
        return factory(**(kwargs or {}))
    except Exception as error:  # noqa: BLE001 - any calculator may refuse its arguments in its own way
        raise BaselineError(f"{what} {calculator}({kwargs or {}}): {type(error).__name__}: {error}") from None


def calculator_results(calculator, atoms: Atoms, stress: bool) -> dict[str, Any]:
    """Energy (eV), forces (eV/Å) and, if asked, stress (eV/Å³, Voigt, ASE sign) of ``calculator`` on a copy of ``atoms``."""
    structure = atoms.copy()
    structure.calc = calculator
    result: dict[str, Any] = {
        "energy": float(structure.get_potential_energy()),
        "forces": np.asarray(structure.get_forces(), dtype=np.float64),
    }
    if stress:
        result["stress"] = np.asarray(structure.get_stress(), dtype=np.float64)
    return result


def cached_baseline(spec: BaselineSpec) -> Baseline:
    """One :class:`Baseline` per spec and process (a calculator is built once, then reused)."""
    return _baseline_from_json(spec.model_dump_json())


@functools.lru_cache(maxsize=16)
def _baseline_from_json(serialized: str) -> Baseline:
    return Baseline(BaselineSpec.model_validate_json(serialized))


class Baseline:
    """A :class:`BaselineSpec` ready to evaluate (the calculator is built once)."""

    def __init__(self, spec: BaselineSpec):
        self.spec = spec
        self.calculator = build_calculator(spec.calculator, spec.kwargs, what=f"baseline {spec.label}")

    def __call__(self, atoms: Atoms, stress: bool) -> dict[str, Any]:
        """The baseline's energy, forces and (Voigt) stress; BaselineError if it cannot compute them."""
        try:
            result = calculator_results(self.calculator, atoms, stress)
        except Exception as error:  # noqa: BLE001 - xTB and other codes fail in many ways (SCF, elements)
            raise BaselineError(f"baseline {self.spec.label}: {type(error).__name__}: {error}") from None
        if not all(np.isfinite(value).all() for value in result.values()):
            raise BaselineError(f"baseline {self.spec.label}: non-finite result")
        return result

