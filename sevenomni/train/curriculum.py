"""Introducing a task into a model mid-curriculum: θT rows to zero, shifts by regression."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from sevenomni.data.statistics import element_reference_energies
from sevenomni.keys import ENERGY
from sevenomni.nn import SevenOmniModel
from sevenomni.nn.task import TaskEmbedding


@torch.no_grad()
def reset_task_embedding(model: SevenOmniModel, task_index: int) -> None:
    """Put a task on the common PES: its row of every θT table becomes zero."""
    for module in model.modules():
        if isinstance(module, TaskEmbedding):
            module.weight[task_index].zero_()


def fit_task_shift(model: SevenOmniModel, batches: Iterable, task_index: int, device: torch.device) -> np.ndarray:
    """Set shift[task, :] by least squares of E_ref − E_model(without shift) on element counts.

    Elements absent from the batches keep a zero shift. Returns the fitted per-element shifts.
    """
    shift = model.energy_shift.weight
    with torch.no_grad():
        shift[task_index].zero_()
    was_training = model.training
    model.eval()
    residuals, count_rows = [], []
    num_species = len(model.elements)
    for batch in batches:
        batch = batch.to(device)
        batch.task = torch.full_like(batch.task, task_index)
        with torch.no_grad():
            out = model(batch, compute_forces=False, compute_stress=False)
        mask = batch.has_energy.view(-1)
        species = model.species(batch.atomic_numbers)
        counts = torch.zeros(batch.num_atoms.numel(), num_species, dtype=torch.float64, device=device)
        counts.index_put_((batch.batch, species), torch.ones_like(species, dtype=torch.float64), accumulate=True)
        residual = batch.energy.view(-1).double() - out[ENERGY].double()
        residuals.append(residual[mask].cpu().numpy())
        count_rows.append(counts[mask].cpu().numpy())
    model.train(was_training)
    if not residuals or sum(len(r) for r in residuals) == 0:
        raise ValueError(f"task {model.tasks[task_index]!r}: no energy labels to fit its energy shifts")
    fitted = element_reference_energies(np.concatenate(residuals), np.concatenate(count_rows))
    with torch.no_grad():
        shift[task_index] = torch.as_tensor(fitted, dtype=shift.dtype, device=shift.device)
    return fitted
