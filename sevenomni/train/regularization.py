"""Weight penalties: selective L2 on the task embeddings θT (the paper's), or on everything."""

from __future__ import annotations

import torch

from sevenomni.nn import SevenOmniModel


class WeightPenalty:
    """(λ/2)·Σ‖θ‖² over θT (mode ``task``), over every parameter (``all``), or nothing (``none``).

    An explicit loss term, so in mode ``task`` its gradient reaches the task embeddings only.
    """

    def __init__(self, model: SevenOmniModel, mode: str, strength: float):
        if mode not in ("task", "all", "none"):
            raise ValueError(f"regularization mode must be task, all or none, got {mode!r}")
        self.mode, self.strength, self.model = mode, float(strength), model

    def parameters(self) -> list[torch.nn.Parameter]:
        if self.mode == "task":
            return [p for _, p in self.model.task_embedding_parameters()]
        if self.mode == "all":
            return [p for p in self.model.parameters() if p.requires_grad]
        return []

    def __call__(self) -> torch.Tensor:
        parameters = self.parameters()
        if not parameters or self.strength == 0.0:
            return torch.zeros((), device=next(self.model.parameters()).device)
        return 0.5 * self.strength * sum(p.pow(2).sum() for p in parameters)


def task_embedding_norm(model: SevenOmniModel) -> float:
    """‖θT‖: the Frobenius norm over all task-embedding tables."""
    with torch.no_grad():
        return float(sum(p.pow(2).sum() for _, p in model.task_embedding_parameters()) ** 0.5)
