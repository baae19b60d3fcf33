"""Deprecated path: :mod:`sevenomni.calculators` (``prediction``, ``ase_calculator``). Kept for one
release; importing it warns."""

import warnings

from sevenomni.calculators.ase_calculator import SevenOmniCalculator
from sevenomni.calculators.prediction import PredictionError, predict
from sevenomni.data.graph import has_stress

warnings.warn(
    "sevenomni.calculator is deprecated: import from sevenomni.calculators.prediction (predict, PredictionError) "
    "and sevenomni.calculators.ase_calculator (SevenOmniCalculator), or from sevenomni itself",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["PredictionError", "SevenOmniCalculator", "has_stress", "predict"]
