"""The equivariant network: configuration, layers and the multi-task model."""

from sevenomni.nn.config import COMMON_CHANNEL, ModelConfig
from sevenomni.nn.model import SevenOmniModel
from sevenomni.nn.task import EnergyScale, TaskEmbedding, TaskEnergyScale, TaskLinear, TaskShift, TaskSpecific

__all__ = [
    "COMMON_CHANNEL",
    "EnergyScale",
    "ModelConfig",
    "SevenOmniModel",
    "TaskEmbedding",
    "TaskEnergyScale",
    "TaskLinear",
    "TaskShift",
    "TaskSpecific",
]
