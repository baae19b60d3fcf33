"""The bottom layer shared by ``nn`` and ``data``: the strict config base class and geometric limits.

Nothing here imports another sevenomni module, so every layer may import it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# Below this volume (Å³) a cell cannot carry a stress.
MIN_CELL_VOLUME = 1e-6
# Atoms closer than this (Å) make a record invalid (coincident atoms poison training with NaN).
DEFAULT_MIN_DISTANCE = 0.1


class StrictModel(BaseModel):
    """Base for every config record: unknown keys and wrong types are errors naming the key."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)
