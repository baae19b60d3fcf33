"""Training: configuration, losses, selective regularization, curriculum and the loop.

The names below are imported on first use, so that the command line's :mod:`sevenomni.train.cli`
loads no torch while the parser is built.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "ConfigError": "config",
    "RunConfig": "config",
    "load_config": "config",
    "WeightPenalty": "regularization",
    "task_embedding_norm": "regularization",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"sevenomni.train.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'sevenomni.train' has no attribute {name!r}")
