"""Warnings for predictions outside what a channel was trained on.

A task records the elements of its training data (``ModelConfig.task_elements``). Asking a channel
for an element its task never saw, or one whose energy shift for the task was never fitted (zero
while the task's other shifts are not), draws an :class:`ExtrapolationWarning`: once per model,
channel and element, however many structures or batches follow. The common channel saw every
element any task saw, and uses the energy shifts of the task it takes them from. A task without a
record (a model from before the record) draws no unseen-element warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from weakref import WeakKeyDictionary

from sevenomni.nn import SevenOmniModel
from sevenomni.nn.task_names import COMMON_CHANNEL


class ExtrapolationWarning(UserWarning):
    """A channel is asked for an element it was not trained on, or has no fitted energy shift for."""


# model -> (channel, element) pairs already warned about
_warned: WeakKeyDictionary[SevenOmniModel, set[tuple[str, str]]] = WeakKeyDictionary()


def channel_elements(model: SevenOmniModel, task_index: int, common: bool) -> set[str] | None:
    """The elements a channel was trained on: its task's, or for the common channel every task's
    (None when a needed record is missing)."""
    tasks = model.tasks if common else [model.tasks[task_index]]
    recorded = [model.task_elements(task) for task in tasks]
    if any(elements is None for elements in recorded):
        return None
    return {element for elements in recorded for element in elements}


def warn_extrapolation(model: SevenOmniModel, task_index: int, common: bool, elements: Iterable[str]) -> None:
    """Warn about each of ``elements`` the channel (``task_index``'s, or the common channel with its
    shifts) was not trained on or has no fitted energy shift for; once per model, channel and element."""
    task = model.tasks[task_index]
    channel = f"{COMMON_CHANNEL} (shifts of {task!r})" if common else f"task {task!r}"
    warned = _warned.setdefault(model, set())
    new = [element for element in elements if (channel, element) not in warned]
    if not new:
        return
    seen = channel_elements(model, task_index, common)
    shifts = model.energy_shift.weight[task_index].detach()
    any_fitted = bool(shifts.any())
    for element in new:
        warned.add((channel, element))
        unfitted = any_fitted and float(shifts[model.elements.index(element)]) == 0.0
        shift_note = f"{element} has no fitted energy shift for task {task!r} (it is zero)"
        if seen is not None and element not in seen:
            trained = " ".join(sorted(seen, key=model.elements.index)) or "no elements"
            message = (
                f"{channel} was trained on {trained}, not on {element}: its predictions for {element} extrapolate"
                + (f"; {shift_note}" if unfitted else "")
            )
        elif unfitted:
            message = f"{channel}: {shift_note}, so its energies of structures with {element} lack that reference"
        else:
            continue
        warnings.warn(message, ExtrapolationWarning, stacklevel=3)
