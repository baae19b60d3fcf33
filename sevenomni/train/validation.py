"""Validation metrics per database and per channel."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from sevenomni.analysis.metrics import ErrorAccumulator
from sevenomni.nn import SevenOmniModel

METRIC_NAMES = ("energy_mae", "forces_mae", "forces_rmse", "stress_mae", "structures")


def evaluate(
    model: SevenOmniModel,
    batches: Iterable,
    device: torch.device,
    channel: str | None = None,
    shift_task: str | None = None,
) -> dict[str, float]:
    """Energy MAE (meV/atom), force MAE and RMSE (eV/Å), stress MAE (eV/Å³) over ``batches``.

    ``channel`` None evaluates each structure on its own task; a task name or ``"common"``
    (with ``shift_task``'s shifts) evaluates every structure on that channel. The full set of
    metrics is :class:`sevenomni.analysis.metrics.ErrorAccumulator`'s.
    """
    override = None if channel is None else model.resolve_channel(channel, shift_task)
    was_training = model.training
    model.eval()
    errors = ErrorAccumulator()
    for batch in batches:
        batch = batch.to(device)
        common = False
        if override is not None:
            batch.task = torch.full_like(batch.task, override[0])
            common = override[1]
        want_stress = bool(batch.has_stress.any())
        out = model(batch, common=common, compute_forces=True, compute_stress=want_stress, create_graph=False)
        errors.add(batch, out)
    model.train(was_training)
    summary = errors.summary()
    return {name: summary[name] for name in METRIC_NAMES}
