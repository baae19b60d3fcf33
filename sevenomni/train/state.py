"""Random-number-generator state capture, so a resumed run replays the identical sequence."""

from __future__ import annotations

import random

import numpy as np
import torch


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
