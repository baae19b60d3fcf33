"""sevenomni: one equivariant interatomic potential trained on many ab initio databases.

The public names below are imported on first use (``from sevenomni import load_model``), so that
``import sevenomni`` — and with it the command line's argument parsing — loads neither torch nor
e3nn nor torch_geometric.
"""

from importlib import import_module
from typing import Any

from sevenomni.core.version import __version__

_LAZY = {
    "PredictionError": "sevenomni.calculators.prediction",
    "SevenOmniCalculator": "sevenomni.calculators.ase_calculator",
    "predict": "sevenomni.calculators.prediction",
    "CheckpointError": "sevenomni.model_io.checkpoint",
    "save_checkpoint": "sevenomni.model_io.checkpoint",
    "load_model": "sevenomni.model_io.loading",
    "ModelConfig": "sevenomni.nn",
    "SevenOmniModel": "sevenomni.nn",
}


def build_model(tasks: list[str], elements: list, **hyperparameters):
    """An untrained model for ``tasks`` and ``elements``; see :class:`ModelConfig` for the rest."""
    from sevenomni.nn import ModelConfig, SevenOmniModel

    return SevenOmniModel(ModelConfig(tasks=tasks, elements=elements, **hyperparameters))


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sevenomni' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "ModelConfig",
    "PredictionError",
    "SevenOmniCalculator",
    "SevenOmniModel",
    "__version__",
    "build_model",
    "load_model",
    "predict",
    "save_checkpoint",
]
