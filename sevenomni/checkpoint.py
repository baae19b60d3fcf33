"""Deprecated path: :mod:`sevenomni.model_io.checkpoint`. Kept for one release; importing it warns."""

import warnings

from sevenomni.model_io.checkpoint import *  # noqa: F403

warnings.warn(
    "sevenomni.checkpoint is deprecated: import from sevenomni.model_io.checkpoint",
    DeprecationWarning,
    stacklevel=2,
)
