"""The bottom layer shared by ``nn`` and ``data``: the strict config base class and geometric limits.

Nothing here imports another sevenomni module, so every layer may import it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError

# Below this volume (Å³) a cell cannot carry a stress.
MIN_CELL_VOLUME = 1e-6
# Atoms closer than this (Å) make a record invalid (coincident atoms poison training with NaN).
DEFAULT_MIN_DISTANCE = 0.1
# The neighbour search of one structure, at a given cutoff, may use at most this many cutoff-sized
# bins over the structure's extent (the cell list's grid; beyond it vesin's grid degenerates and
# kills the process), visit at most this many (bin, neighbouring bin) pairs, and reach at most this
# many periodic images of the cell within the cutoff (see sevenomni.data.graph.check_cell).
MAX_CELL_LIST_BINS = 100_000
MAX_SEARCHED_BIN_PAIRS = 10_000_000
MAX_PERIODIC_IMAGES = 10_000
# The cutoff (Å) at which ingest checks those limits (a store does not know its models' cutoffs).
REFERENCE_CUTOFF = 5.0


class StrictModel(BaseModel):
    """Base for every config record: unknown keys, wrong types and non-finite numbers (inf, NaN) are
    errors naming the key."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)


def validation_problems(error: ValidationError, prefix: str = "") -> list[str]:
    """One ``key.path: what is wrong`` line per problem of a validation error."""
    return [
        f"{'.'.join(str(part) for part in (prefix, *item['loc']) if part != '') or '(top level)'}: {item['msg']}"
        for item in error.errors()
    ]
