"""Batched prediction of energy, forces, stress and per-atom energies for many structures, with clear
errors for structures no graph can be built for and for non-finite outputs."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from ase import Atoms
from ase.data import atomic_numbers
from ase.stress import full_3x3_to_voigt_6_stress

from sevenomni.calculators.dispersion import D3Correction, D3Settings, d3_correction
from sevenomni.calculators.extrapolation import warn_extrapolation
from sevenomni.core.base import DEFAULT_MIN_DISTANCE
from sevenomni.core.baseline import cached_baseline
from sevenomni.core.devices import resolve_device
from sevenomni.core.keys import ATOMIC_ENERGIES, ENERGY, FORCES, STRESS
from sevenomni.data.graph import atoms_to_graph, closest_pair, collate, describe_pair, has_stress
from sevenomni.model_io.loading import load_model
from sevenomni.nn import SevenOmniModel
from sevenomni.nn.backend import uses_cueq


class PredictionError(ValueError):
    """A structure the model cannot predict: one no graph can be built for (non-finite, empty, a
    degenerate or too extreme a cell: see ``graph.check_cell``), or whose output is not finite. Names
    the structure and, when that is the cause, its atoms that (nearly) coincide."""


def structure_label(atoms: Atoms, index: int) -> str:
    """``structure 3 (Si2)``: a structure of a prediction, by its index and formula (if it has atoms)."""
    formula = atoms.get_chemical_formula()
    return f"structure {index} ({formula})" if formula else f"structure {index}"


def check_finite(result: dict[str, np.ndarray | float], atoms: Atoms, index: int) -> None:
    """Raise :class:`PredictionError` if any predicted quantity of structure ``index`` is not finite."""
    bad = [name for name, value in result.items() if not np.isfinite(value).all()]
    if not bad:
        return
    positions = np.asarray(atoms.get_positions(), dtype=np.float64)
    pair = closest_pair(positions, atoms.cell.array, atoms.pbc, DEFAULT_MIN_DISTANCE)
    cause = f"{describe_pair(*pair)}; " if pair is not None else ""
    raise PredictionError(
        f"{structure_label(atoms, index)}: {cause}the model's {', '.join(bad)} "
        f"{'is' if len(bad) == 1 else 'are'} not finite"
    )


def out_of_memory(model: SevenOmniModel, chunk: list[Atoms], first: int, batch, error: Exception) -> Exception:
    """torch's out-of-memory error, restated with the sizes that caused it and what to change."""
    atoms, edges = sum(len(a) for a in chunk), int(batch.edge_index.shape[1])
    advice = ["a smaller batch_size"] if len(chunk) > 1 else []
    if not uses_cueq(model.config.tp_backend):
        advice.append("tp_backend='cueq' (the edge gather/scatter inside the kernel, without per-edge copies)")
    advice.append("float32" if model.dtype == torch.float64 else "a smaller cell or a device with more memory")
    return torch.cuda.OutOfMemoryError(
        f"out of GPU memory evaluating structure(s) {first}–{first + len(chunk) - 1}: {atoms} atoms, {edges} edges "
        f"within {model.cutoff} Å, tp_backend {model.config.tp_backend}, {str(model.dtype).removeprefix('torch.')}; "
        f"try {' or '.join(advice)}. ({str(error).splitlines()[0]})"
    )


def predict(
    model: SevenOmniModel | str | os.PathLike,
    structures: Iterable[Atoms],
    task: str | None = None,
    shift_task: str | None = None,
    batch_size: int = 16,
    device: str | torch.device = "auto",
    d3: bool | dict | D3Settings | D3Correction | None = None,
    require_neighbours: bool = False,
) -> Iterator[dict[str, np.ndarray | float]]:
    """Energy, per-atom energies, forces and (where defined) stress for each structure, batched.

    ``model`` is a model or anything :func:`~sevenomni.load_model` takes (a model file, a training
    checkpoint, a run directory, a SevenNet checkpoint). ``task`` names the channel (``"common"``
    for the common PES, with ``shift_task``'s shifts). A structure whose prediction is not finite
    (e.g. two atoms at one position) raises :class:`PredictionError` naming its index in
    ``structures`` and the atoms that coincide. A channel trained by Δ-learning returns model +
    baseline (energy, forces, stress; no per-atom ``energies``, which the baseline does not give);
    ``d3`` (as the calculator takes it, or a :class:`~sevenomni.calculators.dispersion.D3Correction`) adds
    DFT-D3 dispersion the same way.
    Running out of GPU memory raises torch's ``OutOfMemoryError`` restated with the batch's atoms,
    edges and backend, and what to change. An element the model does not know is a
    :class:`PredictionError` naming the structure; so is, with ``require_neighbours``, a structure of
    several atoms without one pair within the cutoff (a single atom is an isolated-atom reference).
    An element the channel was not trained on draws an
    :class:`~sevenomni.calculators.extrapolation.ExtrapolationWarning`.
    """
    device = resolve_device(device)
    if not isinstance(model, SevenOmniModel):
        model = load_model(model).to(device)
    task_index, common = model.resolve_channel(task, shift_task)
    spec = model.baseline_of(model.tasks[task_index])
    # terms added outside the network; none of them gives per-atom energies
    corrections = [c for c in (cached_baseline(spec) if spec is not None else None, d3_correction(d3)) if c is not None]
    pending: list[Atoms] = []
    done = 0

    def run(chunk: list[Atoms], first: int) -> list[dict]:
        graphs = []
        for index, atoms in enumerate(chunk):
            label = structure_label(atoms, first + index)
            try:  # on a GPU, built there (vesin-torch)
                graph = atoms_to_graph(atoms, model.cutoff, label, device=device)
                model.attach_species(graph, torch.as_tensor(atoms.numbers))
            except ValueError as error:  # graph.StructureError (it names the structure), or an unknown element
                message = str(error)
                raise PredictionError(message if message.startswith(label) else f"{label}: {message}") from None
            if require_neighbours and len(atoms) > 1 and graph.edge_index.shape[1] == 0:
                raise PredictionError(
                    f"{label}: no two atoms within the model's cutoff of {model.cutoff} Å (are the positions in Å?)"
                )
            graph.task = torch.tensor([task_index], device=graph.pos.device)
            graphs.append(graph)
        present = {int(z) for atoms in chunk for z in np.unique(atoms.numbers)}
        warn_extrapolation(model, task_index, common, [e for e in model.elements if atomic_numbers[e] in present])
        batch = collate(graphs).to(device)
        try:
            out = model(batch, common=common, compute_forces=True, compute_stress=True, create_graph=False)
        except torch.cuda.OutOfMemoryError as error:
            raise out_of_memory(model, chunk, first, batch, error) from error
        results, start = [], 0
        for index, atoms in enumerate(chunk):
            stop = start + len(atoms)
            result = {
                "energy": float(out[ENERGY][index].detach()),
                "energies": out[ATOMIC_ENERGIES][start:stop].detach().cpu().double().numpy(),
                "forces": out[FORCES][start:stop].detach().cpu().double().numpy(),
            }
            if has_stress(atoms):
                stress = out[STRESS][index].detach().cpu().double().numpy()
                result["stress"] = full_3x3_to_voigt_6_stress(stress)
            if corrections:
                del result["energies"]
            for correction in corrections:
                for key, value in correction(atoms, stress="stress" in result).items():
                    result[key] = result[key] + value
            check_finite(result, atoms, first + index)
            results.append(result)
            start = stop
        return results

    for atoms in structures:
        pending.append(atoms)
        if len(pending) == batch_size:
            yield from run(pending, done)
            done += len(pending)
            pending = []
    if pending:
        yield from run(pending, done)
