"""LAMBench's normalized force-field error M_FF on the held-out test sets (see :mod:`.runner`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.io import read
from ase.stress import voigt_6_to_full_3x3_stress

from sevenomni.experiments.labels import reference

# test set -> domain
TEST_SETS = {
    "test_crystal_gfn1": "inorganic crystals",
    "test_molecule_gfn2": "small molecules",
    "test_molecule_gfn1": "small molecules",
}
WEIGHTS = {"energy": 0.5, "forces": 0.5}
WEIGHTS_WITH_VIRIAL = {"energy": 0.45, "forces": 0.45, "virial": 0.1}


def load_sets(data_dir: Path) -> dict[str, list[Atoms]]:
    sets = {}
    for name in TEST_SETS:
        path = Path(data_dir) / f"{name}.extxyz"
        if not path.is_file():
            raise SystemExit(f"{path}: missing (generate it with scripts/make_multifidelity_data.py)")
        sets[name] = read(path, ":")
    return sets


def pick(sets: dict[str, list[Atoms]], spec: str) -> tuple[str, Atoms]:
    """``SET:SOURCE`` -> (set name, the set's first structure of that source)."""
    set_name, _, source = spec.partition(":")
    if set_name not in sets:
        raise SystemExit(f"{spec}: unknown test set {set_name!r}; one of {list(sets)}")
    for atoms in sets[set_name]:
        if atoms.info.get("source") == source:
            return set_name, atoms.copy()
    sources = sorted({a.info.get("source") for a in sets[set_name]})
    raise SystemExit(f"{spec}: no structure of source {source!r} in {set_name}; sources: {sources}")


def virial_per_atom(stress_voigt: np.ndarray, atoms: Atoms) -> np.ndarray:
    """-σ·V / N as a 3×3 (eV/atom) from an ASE-sign Voigt stress (eV/Å³)."""
    return -voigt_6_to_full_3x3_stress(np.asarray(stress_voigt)) * atoms.get_volume() / len(atoms)


def composition_counts(structures: Sequence[Atoms]) -> np.ndarray:
    return np.array([np.bincount(a.numbers, minlength=119) for a in structures], dtype=float)


def least_squares_residual(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` minus their least-squares fit on element counts (per-element references)."""
    coefficients, *_ = np.linalg.lstsq(counts, values, rcond=None)
    return values - counts @ coefficients


def rmse(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


def predict_all(calculator: Calculator, structures: Sequence[Atoms], with_stress: Sequence[bool]) -> list[dict]:
    """Energy, forces and, where ``with_stress`` (the structures that have stress labels), stress."""
    predictions = []
    for atoms, stress in zip(structures, with_stress, strict=True):
        atoms = atoms.copy()
        atoms.calc = calculator
        result = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if stress:
            result["stress"] = atoms.get_stress()
        predictions.append(result)
    return predictions


def force_field_errors(structures: Sequence[Atoms], predictions: Sequence[dict]) -> dict:
    """RMSEs of the model (energies bias-adjusted) and of the composition-only dummy, and their
    ratios capped at 1: energy per atom (eV/atom), force components (eV/Å), virial per atom (eV/atom)."""
    sizes = np.array([len(a) for a in structures], dtype=float)
    counts = composition_counts(structures)
    stored = reference(structures)
    labels = np.array(stored["energy"])
    predicted = np.array([p["energy"] for p in predictions])
    model = {"energy": rmse(least_squares_residual(counts, predicted - labels) / sizes)}
    dummy = {"energy": rmse(least_squares_residual(counts, labels) / sizes)}
    reference_forces = np.concatenate([forces.ravel() for forces in stored["forces"]])
    predicted_forces = np.concatenate([np.asarray(p["forces"]).ravel() for p in predictions])
    model["forces"] = rmse(predicted_forces - reference_forces)
    dummy["forces"] = rmse(reference_forces)
    with_stress = [(a, p, s) for a, p, s in zip(structures, predictions, stored["stress"]) if s is not None]
    if with_stress:
        virials = np.array([virial_per_atom(s, a) for a, _, s in with_stress])
        predicted = np.array([virial_per_atom(p["stress"], a) for a, p, _ in with_stress])
        model["virial"] = rmse(predicted - virials)
        dummy["virial"] = rmse(virials)
    normalized = {key: min(model[key] / dummy[key], 1.0) if dummy[key] > 0 else math.nan for key in model}
    return {"structures": len(structures), "model_rmse": model, "dummy_rmse": dummy, "normalized": normalized}


def force_field_metric(per_set: dict[str, dict]) -> dict:
    """Per domain: geometric mean over its sets per type, weighted over types; M_FF = domain mean."""
    domains = {}
    for domain in dict.fromkeys(TEST_SETS.values()):
        members = [per_set[name]["normalized"] for name, d in TEST_SETS.items() if d == domain and name in per_set]
        if not members:
            continue
        weights = WEIGHTS_WITH_VIRIAL if any("virial" in m for m in members) else WEIGHTS
        by_type = {kind: float(np.exp(np.mean([np.log(m[kind]) for m in members if kind in m]))) for kind in weights}
        combined = sum(weights[k] * by_type[k] for k in weights) / sum(weights.values())
        domains[domain] = {"by_type": by_type, "weights": weights, "M": combined}
    return {"domains": domains, "M_FF": float(np.mean([d["M"] for d in domains.values()]))}


# ---------------------------------------------------------------------------------- efficiency
