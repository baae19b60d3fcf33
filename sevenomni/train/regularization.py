"""Weight penalties: selective L2 on the task embeddings θT (the paper's), or on every weight."""

from __future__ import annotations

import torch

from sevenomni.core.keys import ENERGY, FORCES
from sevenomni.nn import ParameterRole, SevenOmniModel, parameter_roles
from sevenomni.train.loss import LossTerm, zero_terms


class WeightPenalty:
    """(λ/2)·Σ‖θ‖² over θT (mode ``task``), over every weight (``all``), or nothing (``none``).

    An explicit loss term, so in mode ``task`` its gradient reaches the task embeddings only.
    Neither mode penalizes the energy shifts and scales: they are absolute energy references
    (tens of eV per atom) that differ between methods by design.
    ``tasks`` (task indices; default all) limits it to the rows of the tasks a run trains: a
    checkpoint's task with no data in a fine-tuning run must keep its θT, not decay to zero.
    """

    def __init__(self, model: SevenOmniModel, mode: str, strength: float, tasks: list[int] | None = None):
        if mode not in ("task", "all", "none"):
            raise ValueError(f"regularization mode must be task, all or none, got {mode!r}")
        self.mode, self.strength, self.model = mode, float(strength), model
        self.tasks = None if tasks is None else sorted(set(tasks))

    def _penalized(self) -> list[tuple[torch.nn.Parameter, ParameterRole]]:
        """The penalized parameters, in the model's order, with their roles."""
        if self.mode == "task":
            return [(p, role) for _, p, role in parameter_roles(self.model) if role is ParameterRole.TASK_PENALIZED]
        if self.mode == "all":
            return [(p, role) for _, p, role in parameter_roles(self.model) if p.requires_grad and not role.exempt]
        return []

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p, _ in self._penalized()]

    def __call__(self) -> torch.Tensor:
        penalized = self._penalized()
        if not penalized or self.strength == 0.0:
            return torch.zeros((), device=next(self.model.parameters()).device)
        parameters = [p for p, _ in penalized]
        if self.tasks is not None:
            rows = torch.as_tensor(self.tasks, device=parameters[0].device)
            parameters = [p.index_select(0, rows) if role.task_specific else p for p, role in penalized]
        return 0.5 * self.strength * sum(p.pow(2).sum() for p in parameters)


def task_embedding_norm(model: SevenOmniModel) -> float:
    """‖θT‖: the Frobenius norm over all task-embedding tables."""
    with torch.no_grad():
        return float(sum(p.pow(2).sum() for _, p in model.task_embedding_parameters()) ** 0.5)


class FunctionSpacePenalty:
    """λ_f · [mean over structures of (ΔE/N)² + mean over force components of ΔF²], where Δ is a
    structure's own task channel minus the common PES (θT = 0) with that task's shifts and scale.

    It penalizes the gap between channels in function space, which the L2 norm of θT does not
    bound: the shared weights can amplify a small θT. It costs one extra forward (and backward)
    of the batch at θT = 0. Zero when θT = 0; the shifts cancel in Δ, so they get no gradient.
    Terms come as sums with counts (see :class:`~sevenomni.train.loss.LossTerm`) for distributed
    normalization; forces only when the step computes them.
    """

    ENERGY_TERM, FORCES_TERM = "function_space_energy", "function_space_forces"

    def __init__(self, strength: float):
        self.strength = float(strength)

    @property
    def term_weights(self) -> dict[str, float]:
        return {self.ENERGY_TERM: self.strength, self.FORCES_TERM: self.strength}

    def nothing(self, device: torch.device, dtype: torch.dtype) -> dict[str, LossTerm]:
        return zero_terms(self.term_weights, device, dtype)

    def __call__(self, model: SevenOmniModel, batch, prediction: dict[str, torch.Tensor]) -> dict[str, LossTerm]:
        with_forces = FORCES in prediction
        common = model(batch, common=True, compute_forces=with_forces, compute_stress=False, create_graph=True)
        dtype = prediction[ENERGY].dtype
        num_atoms = batch.num_atoms.view(-1).to(dtype)
        energy = ((prediction[ENERGY] - common[ENERGY]) / num_atoms).pow(2)
        terms = self.nothing(prediction[ENERGY].device, dtype)
        terms[self.ENERGY_TERM] = LossTerm(energy.sum(), torch.tensor(float(energy.numel()), device=energy.device, dtype=dtype))
        if with_forces:
            forces = (prediction[FORCES] - common[FORCES]).pow(2)
            terms[self.FORCES_TERM] = LossTerm(forces.sum(), torch.tensor(float(forces.numel()), device=forces.device, dtype=dtype))
        return terms
