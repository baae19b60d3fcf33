"""The equivariant network: configuration, layers and the multi-task model."""

from sevenomni.nn.config import COMMON_CHANNEL, ModelConfig
from sevenomni.nn.model import SevenOmniModel
from sevenomni.nn.task import TaskEmbedding, TaskLinear, TaskShiftScale, TaskSpecific

__all__ = [
    "COMMON_CHANNEL",
    "ModelConfig",
    "SevenOmniModel",
    "TaskEmbedding",
    "TaskLinear",
    "TaskShiftScale",
    "TaskSpecific",
]
