"""Early stopping: a stage ends once its validation score has stopped improving."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sevenomni.train.config_sections import EarlyStoppingSection


@dataclass
class StageImprovement:
    """A stage's best validation score and the validations since it last improved; part of
    :class:`~sevenomni.train.state.TrainingProgress`, so a resumed run keeps counting."""

    best: float = math.inf
    stale: int = 0  # validations in a row without an improvement of more than min_delta

    def observe(self, score: float, min_delta: float) -> None:
        if score < self.best - min_delta:
            self.best, self.stale = score, 0
        else:
            self.stale += 1


class EarlyStopping:
    """``train.early_stopping``: whether a stage's validations say it should end now."""

    def __init__(self, settings: EarlyStoppingSection, metric: str):
        self.settings, self.metric = settings, metric

    def observe(self, improvement: StageImprovement, score: float) -> None:
        """Count ``score``, the stage's latest validation score."""
        improvement.observe(score, self.settings.min_delta)

    def exhausted(self, improvement: StageImprovement) -> bool:
        """Whether the stage has gone ``patience`` validations without improving: it ends."""
        return improvement.stale >= self.settings.patience

    def message(self, stage: str, step: int) -> str:
        return (
            f"early stopping: {self.metric} has not improved by more than {self.settings.min_delta:g} for "
            f"{self.settings.patience} validations; stage {stage} ends at step {step}"
        )
