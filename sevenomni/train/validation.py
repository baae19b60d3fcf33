"""Validation metrics per database and per channel."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from sevenomni.nn import SevenOmniModel
from sevenomni.train.loss import VOIGT

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
    (with ``shift_task``'s shifts) evaluates every structure on that channel.
    """
    override = None if channel is None else model.resolve_channel(channel, shift_task)
    was_training = model.training
    model.eval()
    sums = dict.fromkeys(("energy", "forces_abs", "forces_sq", "stress"), 0.0)
    counts = dict.fromkeys(("energy", "forces", "stress"), 0)
    structures = 0
    for batch in batches:
        batch = batch.to(device)
        common = False
        if override is not None:
            batch.task = torch.full_like(batch.task, override[0])
            common = override[1]
        want_stress = bool(batch.has_stress.any())
        out = model(batch, common=common, compute_forces=True, compute_stress=want_stress, create_graph=False)
        dtype = out["energy"].dtype
        structures += int(batch.num_atoms.numel())
        mask = batch.has_energy.view(-1)
        error = (out["energy"].detach() - batch.energy.view(-1).to(dtype)) / batch.num_atoms.to(dtype)
        sums["energy"] += float(error[mask].abs().sum())
        counts["energy"] += int(mask.sum())
        node_mask = batch.has_forces.view(-1)[batch.batch]
        error = (out["forces"].detach() - batch.forces.to(dtype))[node_mask]
        sums["forces_abs"] += float(error.abs().sum())
        sums["forces_sq"] += float(error.pow(2).sum())
        counts["forces"] += error.numel()
        if want_stress:
            mask = batch.has_stress.view(-1)
            error = (out["stress"].detach() - batch.stress.to(dtype)).reshape(-1, 9)[:, list(VOIGT)][mask]
            sums["stress"] += float(error.abs().sum())
            counts["stress"] += error.numel()
    model.train(was_training)
    nan = float("nan")
    return {
        "energy_mae": 1000.0 * sums["energy"] / counts["energy"] if counts["energy"] else nan,
        "forces_mae": sums["forces_abs"] / counts["forces"] if counts["forces"] else nan,
        "forces_rmse": (sums["forces_sq"] / counts["forces"]) ** 0.5 if counts["forces"] else nan,
        "stress_mae": sums["stress"] / counts["stress"] if counts["stress"] else nan,
        "structures": float(structures),
    }
