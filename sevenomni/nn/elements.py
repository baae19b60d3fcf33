"""Extending a trained model with new elements (fine-tuning onto chemistry it has not seen).

Every species-indexed weight grows by the new elements' rows, at their places in the model's
element order (sorted by atomic number): the species embedding, the species self-connections,
the per-task energy shifts and the per-element energy scales. Existing rows keep their values;
the species embedding and the self-connections normalise by the number of species (e3nn's
'element' path normalisation), so their existing rows are rescaled by √(new count / old count)
and structures of the old elements get the same predictions (to rounding). New embedding and
self-connection rows are a fresh model's random initialisation; new shifts are 0 (to be fitted),
new per-element scales the mean of the task's existing ones.
"""

from __future__ import annotations

import math

import torch

from sevenomni.nn.config import element_symbols
from sevenomni.nn.interaction import SelfConnection
from sevenomni.nn.model import SevenOmniModel
from sevenomni.nn.task import EnergyScale, TaskShift


def species_tables(model: SevenOmniModel) -> dict[str, str]:
    """Name of each species-indexed weight → how its species axis is laid out and normalised:
    ``columns`` (a [rows, species] table, not normalised), ``embedding`` (a [species, channels]
    matrix, normalised) or ``self_connection`` (e3nn tensor-product weights, per path
    [channels in, species, channels out], normalised)."""
    tables = {"species_embedding.weight": "embedding"}
    for name, module in model.named_modules():
        if isinstance(module, TaskShift) or (isinstance(module, EnergyScale) and module.weight.shape[1] > 1):
            tables[f"{name}.weight"] = "columns"
        elif isinstance(module, SelfConnection) and module.kind == "species":
            tables[f"{name}.map.weight"] = "self_connection"
    return tables


@torch.no_grad()
def extend_elements(model: SevenOmniModel, new_elements: list[str], seed: int = 0) -> SevenOmniModel:
    """A copy of ``model`` that also knows ``new_elements`` (see the module docstring)."""
    old = model.elements
    added = sorted(set(element_symbols(new_elements)) - set(old))
    if not added:
        return model
    elements = element_symbols([*old, *added])
    torch.manual_seed(seed)
    grown = SevenOmniModel(model.config.model_copy(update={"elements": elements}))
    grown.to(next(model.parameters()).device)
    kept = torch.tensor([elements.index(element) for element in old])
    fresh = [elements.index(element) for element in added]
    rescale = math.sqrt(len(elements) / len(old))
    tables = species_tables(model)
    target = grown.state_dict()
    for name, value in model.state_dict().items():
        if name not in tables:
            if target[name].shape != value.shape:
                raise RuntimeError(f"{name}: shape {tuple(value.shape)} → {tuple(target[name].shape)}, not a known species table")
            target[name] = value
            continue
        layout, new = tables[name], target[name]
        if layout == "columns":
            new[:, kept] = value
            new[:, fresh] = 0.0 if name.startswith("energy_shift") else value.mean(dim=1, keepdim=True)
        elif layout == "embedding":
            new.view(len(elements), -1)[kept] = value.view(len(old), -1) * rescale
        else:
            insert_species_rows(model, grown, name, value, new, kept, rescale)
    grown.load_state_dict(target)
    return grown.train(model.training)


def insert_species_rows(
    model: SevenOmniModel, grown: SevenOmniModel, name: str, value: torch.Tensor, new: torch.Tensor,
    kept: torch.Tensor, rescale: float,
) -> None:
    """Self-connection weights: per instruction a [mul_in, species, mul_out] block; the old
    species' slices go to their new places, rescaled."""
    module_name = name.removesuffix(".map.weight")
    old_tp = model.get_submodule(module_name).map
    new_tp = grown.get_submodule(module_name).map
    old_at = new_at = 0
    for old_ins, new_ins in zip(old_tp.instructions, new_tp.instructions):
        old_size, new_size = math.prod(old_ins.path_shape), math.prod(new_ins.path_shape)
        block = value[old_at : old_at + old_size].view(old_ins.path_shape)
        new[new_at : new_at + new_size].view(new_ins.path_shape)[:, kept] = block * rescale
        old_at, new_at = old_at + old_size, new_at + new_size
