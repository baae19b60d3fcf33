"""Seeded random streams: one independent numpy generator per (seed, name), so that every chunk's
random numbers depend neither on the number of workers nor on the order of execution.
"""

from __future__ import annotations

import zlib

import numpy as np


def named_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(name.encode())]))
