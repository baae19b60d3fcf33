"""Training: configuration, losses, selective regularization, curriculum and the loop."""

from sevenomni.train.config import ConfigError, RunConfig, load_config
from sevenomni.train.regularization import WeightPenalty, task_embedding_norm

__all__ = ["ConfigError", "RunConfig", "WeightPenalty", "load_config", "task_embedding_norm"]
