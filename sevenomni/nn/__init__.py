"""The equivariant network: configuration, layers and the multi-task model."""

from sevenomni.nn.config import Architecture, ModelConfig
from sevenomni.nn.model import SevenOmniModel
from sevenomni.nn.task import (
    EnergyScale,
    LinearCorrection,
    ParameterRole,
    TaskEmbedding,
    TaskEnergyScale,
    TaskLinear,
    TaskShift,
    parameter_roles,
)
from sevenomni.nn.task_names import COMMON_CHANNEL, Tasks

__all__ = [
    "COMMON_CHANNEL",
    "Architecture",
    "EnergyScale",
    "LinearCorrection",
    "ModelConfig",
    "ParameterRole",
    "SevenOmniModel",
    "TaskEmbedding",
    "TaskEnergyScale",
    "TaskLinear",
    "TaskShift",
    "Tasks",
    "parameter_roles",
]
