"""What an unknown key of a run config probably meant: the closest valid keys at its level, and
where sevenomni keeps the settings that MACE and SevenNet users know by other names."""

from __future__ import annotations

import difflib
import types
import typing

from pydantic import BaseModel

# Keys of MACE's and SevenNet's inputs → where sevenomni keeps that setting.
FOREIGN_KEYS = {
    "E0s": "data.databases[].energy_references (fit | isolated_atoms | {element: eV})",
    "energy_weight": "train.loss.energy (per database: loss_weights.energy)",
    "forces_weight": "train.loss.forces (per database: loss_weights.forces)",
    "force_weight": "train.loss.forces (per database: loss_weights.forces)",
    "stress_weight": "train.loss.stress (per database: loss_weights.stress)",
    "is_train_stress": "train.loss.stress (a weight > 0 trains stress)",
    "lr": "train.optimizer.lr (or a stage's lr)",
    "learning_rate": "train.optimizer.lr",
    "weight_decay": "train.optimizer.weight_decay",
    "clip_grad": "train.optimizer.grad_clip",
    "scheduler": "train.schedule.kind",
    "lr_scheduler_gamma": "train.schedule.plateau_factor",
    "patience": "train.early_stopping.patience (the learning-rate plateau's: train.schedule.plateau_patience)",
    "eval_interval": "train.validate_every (in steps)",
    "swa_energy_weight": "stages[].loss.energy (a second stage's own weights)",
    "swa_forces_weight": "stages[].loss.forces (a second stage's own weights)",
    "swa_stress_weight": "stages[].loss.stress (a second stage's own weights)",
    "ema": "train.ema_decay",
    "max_num_epochs": "stages[].epochs (each stage gives epochs or steps)",
    "epoch": "stages[].epochs (each stage gives epochs or steps)",
    "epochs": "stages[].epochs (each stage gives epochs or steps)",
    "swa": "a second entry of stages (its own lr, databases and loss weights)",
    "r_max": "model.cutoff",
    "cutoff": "model.cutoff",
    "batch_size": "data.sampling.batch_size",
    "num_channels": "model.channels",
    "channel": "model.channels",
    "max_L": "model.lmax",
    "max_ell": "model.lmax",
    "lmax": "model.lmax",
    "num_interactions": "model.num_layers",
    "num_convolution_layer": "model.num_layers",
    "num_radial_basis": "model.num_radial",
    "is_parity": "model.parity",
    "chemical_species": "model.elements",
    "avg_num_neighbors": "model.avg_num_neighbors",
    "model": "model, a top-level section (the architecture)",
    "train_file": "data.databases[].path",
    "load_dataset_path": "data.databases[].path",
    "valid_fraction": "data.databases[].split.valid_fraction",
    "valid_file": "data.databases[].split.valid_path",
    "energy_key": "data.databases[].energy_key",
    "forces_key": "data.databases[].forces_key",
    "stress_key": "data.databases[].stress_key",
    "num_workers": "data.num_workers",
    "device": "train.device",
    "mixed_precision": "train.radial_precision (bfloat16 radial networks) and train.tf32",
    "default_dtype": "model.dtype",
    "seed": "train.seed",
}


def section_model(root: type[BaseModel], path: tuple) -> type[BaseModel] | None:
    """The config record at ``path`` (keys, and list indices) below ``root``; None where it is not one."""
    model: type[BaseModel] | None = root
    for part in path:
        if isinstance(part, int):
            continue  # a list item: the record class was already taken from the list's type
        if model is None or part not in model.model_fields:
            return None
        model = record_class(model.model_fields[part].annotation)
    return model


def record_class(annotation: typing.Any) -> type[BaseModel] | None:
    """The config record class inside a field type (``X``, ``X | None``, ``list[X]``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (list, typing.Union, types.UnionType):
        for argument in typing.get_args(annotation):
            found = record_class(argument)
            if found is not None:
                return found
    return None


def unknown_key_message(root: type[BaseModel], location: tuple) -> str:
    """What to tell about the unknown key at ``location``: the closest valid keys at its level, the
    sevenomni key of a MACE/SevenNet name, and the keys that level has."""
    key = str(location[-1])
    section = section_model(root, location[:-1])
    valid = list(section.model_fields) if section is not None else []
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.7)
    parts = ["unknown key" + (f" (did you mean {' or '.join(close)}?)" if close else "")]
    if key in FOREIGN_KEYS:
        parts.append(f"MACE/SevenNet's {key} → {FOREIGN_KEYS[key]}")
    if valid:
        parts.append(f"keys here: {', '.join(valid)}")
    return "; ".join(parts)
