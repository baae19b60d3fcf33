"""DFT-D3 dispersion added to a model's energy, forces and stress, through the ``dftd3`` package.

A potential trained on functionals without dispersion (PBE and most GGAs) lacks the long-range
attraction; D3 supplies it as a separate, analytic term. The sum is taken outside the network, so
the model's own prediction is unchanged and the correction can be switched per calculator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ase import Atoms

from sevenomni.core.baseline import calculator_results

D3_DAMPINGS = ("d3bj", "d3zero", "d3bjm", "d3zerom", "d3op")
D3_INSTALL_HINT = "pip install dftd3 (or the project's d3 extra: pip install -e '.[d3]')"


class DispersionError(ValueError):
    """A D3 setting that cannot be used (unknown key, damping or functional, or dftd3 missing)."""


@dataclass(frozen=True)
class D3Settings:
    """Which D3 parameters to use: the functional the model was trained on, and the damping."""

    functional: str = "PBE"
    damping: str = "d3bj"


def d3_settings(d3: bool | dict[str, Any] | D3Settings | None) -> D3Settings | None:
    """``d3`` as settings: ``True`` → PBE with Becke–Johnson damping; a dict names ``functional`` and/or ``damping``."""
    if d3 is None or d3 is False:
        return None
    if d3 is True:
        return D3Settings()
    if isinstance(d3, D3Settings):
        settings = d3
    elif isinstance(d3, dict):
        unknown = sorted(set(d3) - {"functional", "damping"})
        if unknown:
            raise DispersionError(f"d3: unknown key(s) {unknown}; it takes 'functional' and 'damping'")
        settings = D3Settings(**d3)
    else:
        raise DispersionError(f"d3 must be True, False, None or a dict of functional/damping, got {d3!r}")
    if settings.damping not in D3_DAMPINGS:
        raise DispersionError(f"d3 damping must be one of {list(D3_DAMPINGS)}, got {settings.damping!r}")
    return settings


def d3_correction(d3: bool | dict[str, Any] | D3Settings | D3Correction | None) -> D3Correction | None:
    """``d3`` (as :func:`d3_settings` takes it, or a ready correction) as a correction to add; None for none."""
    if isinstance(d3, D3Correction):
        return d3
    settings = d3_settings(d3)
    return D3Correction(settings) if settings is not None else None


class D3Correction:
    """Energy, forces and (where asked) stress of DFT-D3 for one structure."""

    def __init__(self, settings: D3Settings):
        try:
            from dftd3.ase import DFTD3
        except ImportError:
            raise DispersionError(f"d3 needs the dftd3 package, which is not installed: {D3_INSTALL_HINT}") from None
        self.settings = settings
        self.calculator = DFTD3(method=settings.functional, damping=settings.damping)
        try:  # fail now, naming the setting, rather than at the first structure
            self(Atoms("H2", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 0.74]]), stress=False)
        except Exception as error:  # noqa: BLE001 - dftd3 reports an unknown functional in several ways
            raise DispersionError(
                f"d3: dftd3 has no {settings.damping} parameters for functional {settings.functional!r} ({error})"
            ) from None

    def __call__(self, atoms: Atoms, stress: bool) -> dict[str, Any]:
        return calculator_results(self.calculator, atoms, stress)
