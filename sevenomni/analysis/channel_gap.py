"""Where two channels part: the force gap between tasks a and b on the same structures, by part.

The gap is the RMS force-component difference between channel a and channel b. Each *part* is one
task-specific table of the model: every θT site (a task-embedding table, including the penalized
scale offset of ``scale_per_task: penalized``), the per-task energy scale when the model has one,
and the linear correction when enabled. Swapping a part gives channel a that part's row of task
b, all else unchanged; what is left of the gap then (``gap_after_swap``) and how much it closed
(``closed``) say how much of the difference that part carries. Swapping every part at once turns
channel a into channel b, except for the energy shifts, which move energies, not forces.

The parts do not add up: the network is nonlinear in θT, so one site's effect depends on the
others. Read ``closed`` per part as "what this part alone accounts for".
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from ase import Atoms

from sevenomni.calculators.prediction import predict
from sevenomni.nn import SevenOmniModel

ALL_PARTS = "all"


def task_parts(model: SevenOmniModel, embeddings_only: bool = False) -> dict[str, torch.nn.Parameter]:
    """Name → a task-specific table with one row per task, that can move forces (only the θT tables
    with ``embeddings_only``: what the common channel drops)."""
    parts = {name.removesuffix(".embedding.weight"): p for name, p in model.task_embedding_parameters()}
    if embeddings_only:
        return parts
    if model.energy_scale.parameter_role.task_specific:
        parts["energy_scale"] = model.energy_scale.weight
    if model.linear_correction is not None:
        parts["linear_correction"] = model.linear_correction.weight
    return parts


@contextmanager
def rows_from(parameters: Sequence[torch.nn.Parameter], source: int | None, target: int) -> Iterator[None]:
    """Within the block, row ``target`` of each parameter holds row ``source``'s values (zeros for
    ``source=None``: the common channel's θT)."""
    saved = [p.detach()[target].clone() for p in parameters]
    try:
        with torch.no_grad():
            for p in parameters:
                p[target] = 0.0 if source is None else p[source]
        yield
    finally:
        with torch.no_grad():
            for p, row in zip(parameters, saved):
                p[target] = row


def _forces(
    model: SevenOmniModel, structures: Sequence[Atoms], task: str, device, shift_task: str | None = None
) -> np.ndarray:
    results = predict(model, structures, task, shift_task=shift_task, device=device)
    return np.concatenate([r["forces"] for r in results])


def _rms(difference: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(difference))))


def channel_gap(
    model: SevenOmniModel, structures: Sequence[Atoms], task_a: str, task_b: str, device: str = "cpu"
) -> dict:
    """The force gap between channels ``task_a`` and ``task_b`` on ``structures``, part by part
    (eV/Å; see the module docstring). ``task_b`` may be ``common``: the common PES with ``task_a``'s
    energy scale, whose only differing parts are the θT tables (swapped in as zero rows)."""
    a, b = model.tasks.channel(task_a), model.tasks.channel(task_b)
    if a is None:
        raise ValueError(f"the first channel must be a task (its parts are swapped); put 'common' second: {task_b} common")
    name_b = model.tasks.channel_name(task_b)
    model = model.eval()
    forces_a = _forces(model, structures, task_a, device)
    forces_b = _forces(model, structures, name_b, device, shift_task=model.tasks[a] if b is None else None)
    gap = _rms(forces_a - forces_b)
    parts = task_parts(model, embeddings_only=b is None)
    result = {"tasks": [model.tasks[a], name_b], "structures": len(structures), "gap": gap, "parts": {}}
    for name, parameters in [*((n, [p]) for n, p in parts.items()), (ALL_PARTS, list(parts.values()))]:
        with rows_from(parameters, b, a):
            swapped = _forces(model, structures, task_a, device)
        after = _rms(swapped - forces_b)
        result["parts"][name] = {"gap_after_swap": after, "closed": gap - after, "moved": _rms(swapped - forces_a)}
    return result


def format_channel_gap(result: dict) -> str:
    a, b = result["tasks"]
    lines = [
        f"force gap {a} − {b} on {result['structures']} structures: {result['gap'] * 1e3:.1f} meV/Å (RMS)",
        f"{'part (from ' + b + ')':<28} {'gap after swap':>15} {'closed':>10} {'moved':>10}",
    ]
    for name, values in result["parts"].items():
        lines.append(
            f"{name:<28} {values['gap_after_swap'] * 1e3:>15.1f} {values['closed'] * 1e3:>10.1f} "
            f"{values['moved'] * 1e3:>10.1f}"
        )
    lines.append("(meV/Å; parts are swapped one at a time, 'all' together; they need not add up)")
    return "\n".join(lines)
