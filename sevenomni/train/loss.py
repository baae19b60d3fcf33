"""Per-atom energy, force and stress losses with per-database weights and missing-label masks."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sevenomni.core.keys import ENERGY, FORCES, STRESS, VOIGT
from sevenomni.train.config_sections import LossSection


@dataclass
class LossTerm:
    """A weighted sum of element losses and the number of labelled elements behind it."""

    total: torch.Tensor
    count: torch.Tensor


def elementwise(difference: torch.Tensor, kind: str, delta: float) -> torch.Tensor:
    if kind == "mse":
        return difference.pow(2)
    if kind == "mae":
        return difference.abs()
    return torch.nn.functional.huber_loss(difference, torch.zeros_like(difference), reduction="none", delta=delta)


def zero_terms(names, device: torch.device, dtype: torch.dtype) -> dict[str, LossTerm]:
    """A zero sum and count for each of ``names``: the terms of a rank with nothing to score."""
    zero = torch.zeros((), device=device, dtype=dtype)
    return {name: LossTerm(zero, zero) for name in names}


class EnergyForceStressLoss:
    """ℓ(E/N), ℓ(F) per component and ℓ(σ) per Voigt component, each masked and weighted.

    ``database_weights`` is a [n_databases, 3] tensor of per-database (energy, forces, stress)
    weights; each structure's terms are also multiplied by its ``structure_weight`` (its
    config_type's factor, ``DatabaseSpec.config_type_weights``), a force by its structure's. The
    counts stay the numbers of labelled elements, so a factor scales a structure's share of the
    mean (0 removes it, 2 doubles it), as MACE's config-type weights do. Terms come back as sums
    with their counts so a distributed run can normalize by the global count; every term is always there, in the order of :attr:`term_weights` (zero sum
    and count for a quantity not predicted), so every rank reduces the same counts.
    ``config`` is the loss of the stage being trained (``train.loss`` with the stage's weights):
    the trainer sets it when a stage starts.
    """

    def __init__(self, config: LossSection, database_weights: torch.Tensor):
        self.config = config
        self.database_weights = database_weights

    @property
    def term_weights(self) -> dict[str, float]:
        return {ENERGY: self.config.energy, FORCES: self.config.forces, STRESS: self.config.stress}

    def nothing(self, device: torch.device, dtype: torch.dtype) -> dict[str, LossTerm]:
        """The terms of an empty batch (a rank with no share of a small global batch)."""
        return zero_terms(self.term_weights, device, dtype)

    def __call__(self, prediction: dict[str, torch.Tensor], batch) -> dict[str, LossTerm]:
        kind, delta = self.config.kind, self.config.huber_delta
        dtype = prediction[ENERGY].dtype
        structure_weights = batch.structure_weight.view(-1, 1).to(dtype)
        database = self.database_weights.to(prediction[ENERGY].device, dtype)[batch.database.view(-1)]
        weights = database * structure_weights
        num_atoms = batch.num_atoms.to(dtype)
        terms = self.nothing(prediction[ENERGY].device, dtype)

        mask = batch.has_energy.view(-1).to(dtype)
        error = (prediction[ENERGY] - batch.energy.view(-1).to(dtype)) / num_atoms
        terms[ENERGY] = LossTerm((elementwise(error, kind, delta) * weights[:, 0] * mask).sum(), mask.sum())

        if FORCES in prediction:
            node_mask = (batch.has_forces.view(-1).to(dtype) * weights[:, 1])[batch.batch]
            labelled = batch.has_forces.view(-1).to(dtype)[batch.batch]
            error = prediction[FORCES] - batch.forces.to(dtype)
            terms[FORCES] = LossTerm(
                (elementwise(error, kind, delta) * node_mask.unsqueeze(-1)).sum(), 3.0 * labelled.sum()
            )

        if STRESS in prediction:
            mask = batch.has_stress.view(-1).to(dtype)
            voigt = list(VOIGT)
            error = (prediction[STRESS] - batch.stress.to(dtype)).reshape(-1, 9)[:, voigt]
            terms[STRESS] = LossTerm(
                (elementwise(error, kind, delta) * (weights[:, 2] * mask).unsqueeze(-1)).sum(), 6.0 * mask.sum()
            )
        return terms
