"""A run's progress through its curriculum, and the random-number-generator state: what a
resumed run needs, beside the weights and the optimizer, to replay the identical sequence."""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from sevenomni.train.early_stopping import StageImprovement


@dataclass
class TrainingProgress:
    """Where a run stands; saved in every checkpoint as plain data (``progress``)."""

    stage_index: int = 0  # the stage being trained (== number of stages when done)
    stage_step: int = 0  # optimizer steps taken in that stage
    global_step: int = 0  # optimizer steps taken in the run
    epoch: int = 0  # epoch of the stage's sampler
    batches_in_epoch: int = 0  # batches drawn in that epoch, skipped steps included
    introduced: list[str] = field(default_factory=list)  # tasks whose shifts are fitted and θT trained
    bad_steps: int = 0  # consecutive non-finite steps
    skipped_steps: int = 0  # all non-finite steps of the run
    best_metric: float = math.inf  # best validation metric so far (train.best_metric, own channels)
    stage_improvement: StageImprovement = field(default_factory=StageImprovement)  # the stage's, for early stopping

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> TrainingProgress:
        improvement = StageImprovement(**saved.get("stage_improvement", {}))  # absent before early stopping
        return cls(**{**saved, "stage_improvement": improvement})

    def next_stage(self) -> None:
        self.stage_index += 1
        self.stage_step, self.epoch, self.batches_in_epoch = 0, 0, 0
        self.stage_improvement = StageImprovement()


def capture_rng() -> dict:
    """Every RNG the training loop touches, as plain data (loadable with weights_only=True)."""
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [numpy_state[0], torch.as_tensor(numpy_state[1]), *numpy_state[2:]],
        "python": [python_state[0], list(python_state[1]), python_state[2]],
    }


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, key, *rest = state["numpy"]
    np.random.set_state((kind, key.numpy(), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
