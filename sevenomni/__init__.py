"""sevenomni: one equivariant interatomic potential trained on many ab initio databases."""

from sevenomni.calculator import PredictionError, SevenOmniCalculator, predict
from sevenomni.checkpoint import CheckpointError, save_checkpoint
from sevenomni.loading import load_model
from sevenomni.nn import ModelConfig, SevenOmniModel
from sevenomni.version import __version__


def build_model(tasks: list[str], elements: list, **hyperparameters) -> SevenOmniModel:
    """An untrained model for ``tasks`` and ``elements``; see :class:`ModelConfig` for the rest."""
    return SevenOmniModel(ModelConfig(tasks=tasks, elements=elements, **hyperparameters))


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
