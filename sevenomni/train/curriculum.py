"""A task's energy references: θT rows to zero for a new task, per-element shifts by regression on
the model's energy residual (a new task, or a fine-tuned one refit on new data), or given (E0s)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from sevenomni.core.keys import ENERGY
from sevenomni.data.sources import Database
from sevenomni.data.statistics import element_reference_energies
from sevenomni.nn import SevenOmniModel
from sevenomni.train.data import plain_loader
from sevenomni.train.report import energy_shift_line


@dataclass
class ShiftFit:
    """A fit of one task's shifts: the shifts after it, and the energy MAE per atom (eV/atom) of
    the structures it saw, before and after."""

    shifts: np.ndarray
    structures: int
    mae_before: float
    mae_after: float


@torch.no_grad()
def start_on_common_pes(model: SevenOmniModel, task_index: int) -> None:
    """Put a new task on the common PES without energy references: its row of every θT table
    and its shifts become zero."""
    for _, parameter in model.task_embedding_parameters():
        parameter[task_index].zero_()
    model.energy_shift.weight[task_index].zero_()


def fit_task_shift(
    model: SevenOmniModel, batches: Iterable, task_index: int, device: torch.device, elements: list[str] | None = None
) -> ShiftFit:
    """Correct shift[task, :] by the least squares fit of the energy residual E_ref − E_model (the
    model as it is, its shifts included) on element counts.

    A new task (shifts at 0, see :func:`start_on_common_pes`) gets its shifts; a trained one is
    refit to new data. Elements absent from the batches keep their shift, and so do all but
    ``elements`` when given (e.g. only the elements just added to a model).
    """
    shift = model.energy_shift.weight
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
    residual, counts = np.concatenate(residuals), np.concatenate(count_rows)
    # columns in the model's element order, whatever the order of ``elements``: the least-squares
    # solution's rounding depends on it, and every rank of a run must fit the same shifts
    fitted = [i for i, element in enumerate(model.elements) if elements is None or element in elements]
    correction = np.zeros(num_species)
    correction[fitted] = element_reference_energies(residual, counts[:, fitted])
    with torch.no_grad():
        shift[task_index] += torch.as_tensor(correction, dtype=shift.dtype, device=shift.device)
    atoms = counts.sum(axis=1)
    before = float(np.mean(np.abs(residual) / atoms))
    after = float(np.mean(np.abs(residual - counts @ correction) / atoms))
    return ShiftFit(shift[task_index].detach().cpu().double().numpy(), len(residual), before, after)


def set_task_shift(model: SevenOmniModel, task_index: int, references: dict[str, float]) -> np.ndarray:
    """shift[task, element] = the given per-element energies (E0s); the other elements keep theirs.
    Returns the task's shifts."""
    unknown = sorted(set(references) - set(model.elements))
    if unknown:
        raise ValueError(
            f"task {model.tasks[task_index]!r}: energy references for element(s) {unknown}, which the model "
            f"does not have ({model.elements})"
        )
    row = model.energy_shift.weight[task_index]
    with torch.no_grad():
        for element, energy in references.items():
            row[model.elements.index(element)] = energy
    return row.detach().cpu().double().numpy()


def given_energy_references(
    mode: str | dict[str, float], isolated: dict[str, float], elements: Iterable[str], task: str
) -> dict[str, float] | None:
    """The per-element energies ``energy_references`` gives a task (None for ``fit``): the dict
    itself, or the isolated-atom frames' energies (``isolated``); ValueError naming any element of
    the task's data (``elements``) without one."""
    if mode == "fit":
        return None
    references = isolated if mode == "isolated_atoms" else mode
    missing = sorted(set(elements) - set(references))
    if missing:
        where = "no isolated-atom frame with an energy" if mode == "isolated_atoms" else "no value in energy_references"
        raise ValueError(
            f"task {task!r}: element(s) {missing} of its data have {where}; add them "
            "(or use energy_references: fit)"
        )
    return dict(references)


def set_energy_references(
    model: SevenOmniModel,
    task: str,
    task_index: int,
    own: list[Database],
    say: Callable[[str], None],
    *,
    sample: int,
    seed: int,
    device: torch.device,
    refit: bool,
    elements: list[str] | None = None,
) -> None:
    """Set ``task``'s per-element shifts from ``own`` (its databases): the references they give,
    else a regression on a seeded sample of at most ``sample`` of their training structures
    (``refit``: a trained task's shifts corrected to this data, its energy MAE before and after
    reported; only those of ``elements`` when given). ``say`` reports each line (the trainer's log)."""
    isolated = {element: energy for d in own for element, energy in d.isolated.energies.items()}
    in_data = {element for d in own for element in d.train.elements}
    given = given_energy_references(own[0].spec.energy_references, isolated, in_data, task)
    if given is not None:
        shifts = set_task_shift(model, task_index, given if elements is None else {e: given[e] for e in elements})
        origin = "from isolated-atom frames" if own[0].spec.energy_references == "isolated_atoms" else "given"
        say(energy_shift_line(task, model.elements, shifts, origin))
        return
    subset = torch.utils.data.ConcatDataset([d.train for d in own])
    count = min(len(subset), sample)
    indices = np.random.default_rng(seed).choice(len(subset), count, replace=False)
    loader = plain_loader(torch.utils.data.Subset(subset, np.sort(indices)), batch_size=16)
    fit = fit_task_shift(model, loader, task_index, device, elements)
    origin = f"{'refit' if refit else 'fitted'} on {fit.structures} structures"
    say(energy_shift_line(task, model.elements, fit.shifts, origin))
    if refit:
        say(
            f"task {task}: energy MAE on those structures {1000 * fit.mae_before:.1f} meV/atom before the refit, "
            f"{1000 * fit.mae_after:.1f} after (train.finetune.keep_energy_shifts: true keeps the checkpoint's shifts)"
        )
