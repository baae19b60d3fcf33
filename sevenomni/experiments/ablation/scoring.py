"""A trained model's metrics on the ablation's held-out test sets, and the transfer floor.

Labels are read with the library's reader (:mod:`sevenomni.experiments.labels`). The conformational
energy error removes each molecule's mean error with the library's offset removal
(:func:`sevenomni.analysis.metrics.composition_centred`, here grouped by molecule).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from sevenomni.analysis.metrics import ChannelSpread, composition_centred
from sevenomni.experiments.labels import reference


def force_errors(predicted: list[np.ndarray], labels: list[np.ndarray]) -> np.ndarray:
    """Component-wise force errors of all atoms, flattened (eV/Å)."""
    return np.concatenate([(p - r).ravel() for p, r in zip(predicted, labels)])


def per_atom_energy_errors(predicted: Sequence[float], labels: Sequence[float], structures: list) -> np.ndarray:
    """(E_pred - E_ref) / N per structure (eV/atom)."""
    sizes = np.array([len(a) for a in structures], dtype=float)
    return (np.asarray(predicted) - np.asarray(labels)) / sizes


def conformational_energy_errors(predicted: Sequence[float], labels: Sequence[float], structures: list) -> np.ndarray:
    """Energy errors per atom after removing each molecule's mean error (same molecule = same ``source``).

    Only energy differences between conformations of one molecule are compared: the absolute
    references of two methods (or of a channel and foreign labels) differ by a constant per molecule.
    Same convention as the data generator's transfer floor (``data_generation.assemble.transfer_floor``): mean
    removed from total energies, then / N.
    """
    errors = np.asarray(predicted) - np.asarray(labels)
    sizes = np.array([len(a) for a in structures], dtype=float)
    return composition_centred(errors, [a.info.get("source", "") for a in structures]) / sizes


def mae(values: np.ndarray) -> float:
    return float(np.abs(values).mean()) if len(values) else float("nan")


def score(predictions: list[dict], structures: list, labels: list | None = None, molecules: bool = False) -> dict:
    """Force MAE/RMSE, energy MAE (meV/atom; conformational for molecules) and stress MAE."""
    labels = reference(labels if labels is not None else structures)
    forces = force_errors([p["forces"] for p in predictions], labels["forces"])
    energies = [p["energy"] for p in predictions]
    metrics = {
        "forces_mae": mae(forces),
        "forces_rmse": float(np.sqrt(np.mean(forces**2))),
        "energy_mae": 1000 * mae(per_atom_energy_errors(energies, labels["energy"], structures)),
    }
    if molecules:
        metrics["conformational_energy_mae"] = 1000 * mae(conformational_energy_errors(energies, labels["energy"], structures))
    stresses = [(p["stress"], s) for p, s in zip(predictions, labels["stress"]) if s is not None and "stress" in p]
    if stresses:
        metrics["stress_mae"] = mae(np.concatenate([p - s for p, s in stresses]))
    return metrics


def channel_predictions(model, structures: list, channel: str, shift_task: str | None = None) -> list[dict]:
    from sevenomni.calculators.prediction import predict

    return list(predict(model, structures, channel, shift_task=shift_task, batch_size=16, device="cpu"))


@contextmanager
def torch_threads(count: int):
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def evaluate_model(model_path: Path, sets: dict[str, list]) -> dict:
    """Every metric of one trained model on the test sets (listed in :mod:`.runner`'s docstring)."""
    from sevenomni.analysis.channel_gap import channel_gap
    from sevenomni.model_io.loading import load_model
    from sevenomni.train import task_embedding_norm

    model = load_model(model_path)
    molecules, crystals = sets["molecule_gfn1"], sets["crystal_gfn1"]
    on_gfn1 = channel_predictions(model, molecules, "gfn1")
    on_common = channel_predictions(model, molecules, "common", shift_task="gfn1")
    metrics = {
        "tasks": model.tasks,
        "theta_t_norm": task_embedding_norm(model),
        "molecule_gfn1": score(on_gfn1, molecules, molecules=True),
        "crystal_gfn1": score(channel_predictions(model, crystals, "gfn1"), crystals),
        "molecule_gfn1_on_common": score(on_common, molecules, molecules=True),
        "molecule_gfn1_spread_to_common": channel_spread(on_gfn1, on_common),
    }
    if "gfn2" in model.tasks:
        on_gfn2 = channel_predictions(model, molecules, "gfn2")  # the same structures as the gfn2 test set
        metrics["molecule_gfn2"] = score(on_gfn2, molecules, sets["molecule_gfn2"], molecules=True)
        metrics["molecule_gfn1_on_gfn2_channel"] = score(on_gfn2, molecules, molecules=True)
        metrics["molecule_gfn1_spread_to_gfn2"] = channel_spread(on_gfn1, on_gfn2)
        metrics["molecule_gfn1_gap_parts"] = channel_gap(model, molecules, "gfn1", "gfn2")
    return metrics


def channel_spread(predictions: list[dict], others: list[dict]) -> dict:
    """``sevenomni eval``'s channel spread between two channels' predictions of the same structures."""
    spread = ChannelSpread()
    for mine, theirs in zip(predictions, others, strict=True):
        spread.add_structure(mine["forces"], theirs["forces"], mine["energy"], theirs["energy"])
    return spread.summary()


def validation_metrics(run_dir: Path) -> dict:
    """The run's final validation on its own channels, for choosing λ without the test sets.

    Per database that is not a test set (the validation splits of the trained databases, and the
    DBS when the arm does not train on it): force and energy MAE. ``selection_forces_mae`` is
    their mean force MAE, the criterion the λ sweeps are chosen on.
    """
    rows = [json.loads(line) for line in (run_dir / "final.jsonl").read_text().splitlines() if line.strip()]
    per_database = {
        row["database"]: {"forces_mae": row["forces_mae"], "energy_mae": row["energy_mae"]}
        for row in rows
        if row["own"] and not row["database"].startswith("test_")
    }
    values = [entry["forces_mae"] for entry in per_database.values()]
    return {"databases": per_database, "selection_forces_mae": float(np.mean(values)) if values else None}


def transfer_floor(sets: dict[str, list]) -> dict:
    """GFN1 vs GFN2 labels on the same test molecules: the best a copy of the other method can do."""
    gfn1, gfn2 = reference(sets["molecule_gfn1"]), reference(sets["molecule_gfn2"])
    molecules = sets["molecule_gfn1"]
    forces = force_errors(gfn2["forces"], gfn1["forces"])
    return {
        "n_structures": len(molecules),
        "forces_mae": mae(forces),
        "forces_rmse": float(np.sqrt(np.mean(forces**2))),
        "conformational_energy_mae": 1000 * mae(conformational_energy_errors(gfn2["energy"], gfn1["energy"], molecules)),
        "note": "GFN2-xTB labels scored against GFN1-xTB labels on test_molecule_* (eV/Å; meV/atom)",
    }
