"""Deprecated path: :mod:`sevenomni.model_io.loading`. Kept for one release; importing it warns."""

import warnings

from sevenomni.model_io.loading import *  # noqa: F403

warnings.warn(
    "sevenomni.loading is deprecated: import from sevenomni.model_io.loading",
    DeprecationWarning,
    stacklevel=2,
)
