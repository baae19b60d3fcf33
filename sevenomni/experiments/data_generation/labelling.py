"""Labelling with xTB: fresh-calculator single points, frames of a Langevin trajectory driven by xTB,
random strains and thermal momenta; a structure that must be dropped raises ``Skip``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from sevenomni.experiments.data_generation.settings import (
    ELECTRONIC_TEMPERATURE_K,
    MAX_MD_RESTARTS,
    XTB_ACCURACY,
    XTB_MAX_ITER,
)
from sevenomni.experiments.data_generation.structures import plain_copy


def make_xtb(method: str):
    from tblite.ase import TBLite

    return TBLite(method=method, verbosity=0, accuracy=XTB_ACCURACY,
                  max_iterations=XTB_MAX_ITER, electronic_temperature=ELECTRONIC_TEMPERATURE_K)


class Skip(Exception):
    """A structure that must be dropped; ``reason`` is counted in the manifest."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _read_labels(atoms, stress: bool, force_filter: float):
    """Labels from ``atoms.calc`` (calculates if needed); raises Skip."""
    from ase.calculators.calculator import CalculationFailed

    try:
        e = float(atoms.get_potential_energy())
        # raw calculator labels: the FixCom constraint used in MD must not touch them
        f = np.array(atoms.get_forces(apply_constraint=False), dtype=float)
        s = np.array(atoms.get_stress(voigt=True, apply_constraint=False), dtype=float) if stress else None
    except CalculationFailed as exc:
        msg = str(exc).lower()
        raise Skip("scf_not_converged" if "converge" in msg else "calculation_failed") from exc
    except Exception as exc:  # noqa: BLE001 - never crash the run
        raise Skip(f"error_{type(exc).__name__}") from exc
    if not (np.isfinite(e) and np.isfinite(f).all() and (s is None or np.isfinite(s).all())):
        raise Skip("nonfinite_label")
    if np.linalg.norm(f, axis=1).max() > force_filter:
        raise Skip("force_filter")
    return e, f, s


def singlepoint(atoms, method: str, stress: bool, force_filter: float):
    """Fresh-calculator single point -> (energy, forces, stress|None); raises Skip."""
    work = plain_copy(atoms)
    work.calc = make_xtb(method)
    return _read_labels(work, stress, force_filter)


def labelled_copy(atoms, e, f, s, method, config_type, source, struct_id, **extra):
    out = plain_copy(atoms)
    out.info["REF_energy"] = e
    out.arrays["REF_forces"] = np.array(f)
    if s is not None:
        out.info["REF_stress"] = np.array(s)
    out.info["config_type"] = config_type
    out.info["source"] = source
    out.info["method"] = method
    out.info["struct_id"] = struct_id
    out.info.update(extra)
    return out


def md_frames(atoms0, method: str, rng: np.random.Generator, n_frames: int, T: float,
              dt_fs: float, friction_per_fs: float, warmup: int, every: int, stress: bool,
              force_filter: float, skipped: Counter) -> list[tuple[Any, float, np.ndarray, Any]]:
    """Langevin MD driven by xTB; returns [(atoms, e, f, s)] of ``n_frames`` sampled frames.

    Frames that fail the filter are counted and not returned (the trajectory
    continues); an SCF failure ends the trajectory and a new one starts from
    ``atoms0`` (at most MAX_MD_RESTARTS times).
    """
    from ase import units
    from ase.calculators.calculator import CalculationFailed
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin

    frames: list[tuple[Any, float, np.ndarray, Any]] = []
    max_steps = warmup + every * n_frames * 3  # cap when many frames are filtered out
    for _attempt in range(MAX_MD_RESTARTS + 1):
        atoms = plain_copy(atoms0)
        atoms.set_constraint(FixCom())
        atoms.calc = make_xtb(method)
        set_thermal_momenta(atoms, T, rng)
        dyn = Langevin(atoms, timestep=dt_fs * units.fs, temperature_K=T,
                       friction=friction_per_fs / units.fs, fixcm=False, rng=rng)
        steps = 0
        try:
            dyn.run(warmup)
            steps += warmup
            while len(frames) < n_frames and steps < max_steps:
                dyn.run(every)
                steps += every
                try:
                    e, f, s = _read_labels(atoms, stress, force_filter)
                except Skip as sk:
                    skipped[sk.reason] += 1
                    if sk.reason == "force_filter":
                        continue  # drop this frame, keep the trajectory
                    break  # broken electronic structure: start a new trajectory
                frames.append((plain_copy(atoms), e, f, s))
        except CalculationFailed as exc:
            skipped["md_scf_not_converged" if "converge" in str(exc).lower() else "md_calculation_failed"] += 1
        except Exception as exc:  # noqa: BLE001 - never crash the run
            skipped[f"md_error_{type(exc).__name__}"] += 1
        if len(frames) >= n_frames or steps >= max_steps:
            break
    if len(frames) < n_frames:
        skipped["md_frames_missing"] += n_frames - len(frames)
    return frames


def set_thermal_momenta(atoms, T: float, rng: np.random.Generator) -> None:
    """Maxwell-Boltzmann momenta at ``T`` with zero total momentum."""
    from ase import units

    m = atoms.get_masses()[:, None]
    p = np.sqrt(m * units.kB * T) * rng.standard_normal((len(atoms), 3))
    p -= m * p.sum(axis=0) / m.sum()
    atoms.set_momenta(p, apply_constraint=False)


def random_strain(rng: np.random.Generator, max_strain: float) -> np.ndarray:
    eps = np.eye(3) * rng.uniform(-max_strain, max_strain)
    off = rng.uniform(-max_strain, max_strain, size=3)
    eps[0, 1] = eps[1, 0] = off[0]
    eps[0, 2] = eps[2, 0] = off[1]
    eps[1, 2] = eps[2, 1] = off[2]
    eps[np.diag_indices(3)] += rng.uniform(-max_strain / 2, max_strain / 2, size=3)
    return eps
