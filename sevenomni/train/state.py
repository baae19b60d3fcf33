"""A run's training state on disk, and the random-number-generator states a resumed run replays."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

TRAINING_STATE_FORMAT = "sevenomni-training-state"


def read_training_state(path: Path) -> dict[str, Any]:
    """The training state saved at ``path`` (``checkpoints/last.pt`` of a run, for ``--resume``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume: {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != TRAINING_STATE_FORMAT:
        raise ValueError(f"{path}: not a sevenomni training state")
    return state


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
