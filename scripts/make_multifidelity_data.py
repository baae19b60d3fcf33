#!/usr/bin/env python
"""Generate a small, seeded, multi-fidelity xTB dataset for multi-task training.

The generator is fully offline (ASE structure builders + tblite GFN1/GFN2-xTB),
seeded, resumable and parallel.  It writes one extended-XYZ file per set plus a
``manifest.json`` into ``--out``.

Sets
----
``crystal_gfn1`` (D1, train)
    Periodic solids labelled with GFN1-xTB energy, forces and stress.
    Chemistries (see ``CRYSTALS``): diamond C, graphite C, Si, 3C-SiC,
    alpha-quartz SiO2, MgO, LiF, LiH, fcc Al, an ordered cubic ice (ice Ic,
    H2O, protons placed by an Eulerian orientation of the O-O bond graph so
    that the ice rules hold), dry ice (CO2, Pa-3) and urea (P-42_1m).
    Supercells hold 8-24 atoms.  Three kinds of snapshot
    (``config_type``):

    * ``rattle``: Gaussian displacement of every Cartesian coordinate with a
      per-chemistry standard deviation ``sigma`` (table below);
    * ``strain``: the cell is deformed by ``(I + eps)`` with an isotropic part
      drawn from U(-m, m), off-diagonal (shear) parts from U(-m, m) and extra
      normal parts from U(-m/2, m/2), with ``m`` the chemistry's maximum
      strain (2-3 %, table); the atoms move with the cell and are then rattled
      with ``sigma / 2``;
    * ``md``: a short Langevin trajectory (friction 0.02 / fs) driven by GFN1
      itself, started from a ``sigma / 2`` rattle with Maxwell-Boltzmann
      velocities; after 10 warm-up steps one frame is kept every 5 steps
      (preset defaults); every chunk of at most 20 MD frames is its own
      trajectory.  Time step 1.0 fs, 0.5 fs for H-containing solids.

    Rattle amplitudes ``sigma`` (Angstrom), maximum strain and MD temperatures
    (small sigma for the stiff C, Si-C, Si-O and C=O networks so that forces
    stay moderate; larger for the soft ionic solids and the metal):

    ===================  =====  ========  ==========  =====
    chemistry            atoms  sigma/A   max strain  T/K
    ===================  =====  ========  ==========  =====
    C_diamond            16     0.03      2 %         600
    C_graphite           16     0.03      3 %         600
    Si_diamond           16     0.05      3 %         600
    SiC_3C               16     0.03      2 %         600
    SiO2_alpha_quartz    18     0.03      3 %         600
    MgO_rocksalt         16     0.05      3 %         600
    LiF_rocksalt         16     0.05      3 %         600
    LiH_rocksalt         16     0.05      3 %         400
    Al_fcc               8      0.08      3 %         600
    H2O_ice_Ic           24     0.04      3 %         200
    CO2_dry_ice          12     0.02      3 %         150
    urea                 16     0.03      3 %         250
    ===================  =====  ========  ==========  =====

    Fcc-based cells are 2x2x2 primitive supercells (isotropic).  GFN1-xTB is a
    poor model of metallic Al (large residual pressure, very stiff); Al is kept
    as a cheap metallic chemistry, not as a physically accurate one.

``molecule_gfn2`` (D2, train)
    Closed-shell H/C/N/O molecules of ``ase.collections.g2`` (at most 10 heavy
    atoms, more than one atom; radicals/triplets are excluded because the
    labels are spin-restricted).  For each molecule a few short Langevin MD
    trajectories (time step 0.5 fs, friction 0.01 / fs, temperature drawn per
    trajectory from U(300 K, 1000 K)) are driven by GFN2-xTB and sampled every
    20 steps (10 fs) after a 40-step warm-up (preset defaults).  Labels: GFN2-xTB energy and forces; no cell,
    no pbc, no stress.

``molecule_gfn1_dbs`` (DBS, train)
    A seeded random fraction (``dbs_fraction``, at least ``dbs_min``
    structures) of the ``molecule_gfn2`` structures relabelled with GFN1-xTB.
    ``info['struct_id']`` links every DBS structure to its D2 twin.

``test_crystal_gfn1``
    Same chemistries as D1 but independent rattle / strain / MD streams
    (separate random streams and separate trajectories).

``test_molecule_gfn2`` and ``test_molecule_gfn1``
    Whole molecules held out by name from D2 (seeded choice; their names are
    in the manifest).  The two files hold the SAME structures, labelled once
    with GFN2 and once with GFN1; a frame where either label fails is dropped
    from both.  The GFN1-vs-GFN2 force MAE/RMSE on them (the "transfer
    floor") is stored in ``manifest.json``.

``dft_molecule_pbe`` / ``dft_molecule_b3lyp`` (optional, ``--dft``)
    A handful of test-molecule structures labelled with PySCF PBE and B3LYP
    (def2-SVP).  Only if ``pyscf`` can be imported; skipped with a message
    otherwise.

Force filter
------------
A structure is dropped (and the drop counted in the manifest under
``skipped``) if its largest per-atom force norm max_i |F_i| exceeds
``--force-filter`` (default 20 eV/A), if any label is not finite
or if the xTB SCF does not converge (``CalculationFailed``).  An SCF failure
inside an MD trajectory ends that trajectory and a new one is started (at most
three restarts per chunk).  Nothing ever aborts the whole run.

File format
-----------
``{set}.extxyz`` written with ``ase.io.write(format="extxyz")``; labels live
only under REF_ keys (no calculator is attached):

* ``info['REF_energy']``  total energy, eV
* ``arrays['REF_forces']`` forces, eV/A
* ``info['REF_stress']``  Voigt-6 (xx, yy, zz, yz, xz, xy) stress, eV/A^3,
  ASE sign convention (stress = (1/V) dE/d(strain), negative under
  compression); periodic sets only
* ``info['config_type']`` rattle | strain | md
* ``info['source']``  chemistry or molecule name
* ``info['method']``  GFN1-xTB | GFN2-xTB | PBE/def2-SVP | B3LYP/def2-SVP
* ``info['struct_id']`` unique id, ``{source}/{split}/...`` (DBS and test
  GFN1 copies keep the id of their GFN2 twin)

Note that tblite evaluates periodic systems at the Gamma point only, so labels
of these small cells carry finite-size (k-point) errors; they are consistent
labels of the given cells, not converged bulk properties.

Reproducibility / resume / parallelism
--------------------------------------
Work is split into chunks (one per chemistry x split, one per molecule x
split, one per DBS source molecule).  Every chunk has its own random stream
derived from ``(seed, chunk name)`` and its own calculators, so results do not
depend on ``--workers`` or on the order of execution.  A finished chunk is
stored under ``OUT/.cache/`` (file name carries a hash of the chunk's
parameters and the script version); a killed run restarts where it stopped.
Final files are written atomically (temporary file + ``os.replace``).  Workers
run with ``OMP_NUM_THREADS=1``.  No train/valid split is made here; only the
test sets are held out.

Make-ups
--------
``--makeup contrast`` builds a second data set of the same size class, made to differ from the
standard one (``contrast``): crystals of five chemistries only (Si, 3C-SiC, MgO, LiF, Al: no H or
N, C and O in one chemistry each), rattled 2.5x, strained 2x and run at 2x the MD temperature of
the table above, with the counts per chemistry scaled so the set keeps its size. Molecules, splits
and DBS rules are the standard ones. Every set's manifest entry gives its RMS force component and
the spread of its energy per atom (``force_rms``, ``energy_per_atom_std``).

Usage::

    python scripts/make_multifidelity_data.py --preset tiny --out recipes/data/tiny --workers 2
    python scripts/make_multifidelity_data.py --preset small --out data/small --workers 16
    python scripts/make_multifidelity_data.py --preset small --makeup contrast --out data/small_contrast
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

SCRIPT_VERSION = "1.0.0"

# xTB settings shared by every calculation.
XTB_ACCURACY = 1.0
XTB_MAX_ITER = 250
ELECTRONIC_TEMPERATURE_K = 300.0
DEFAULT_FORCE_FILTER = 20.0  # eV/A, max per-atom force norm
MAX_MD_RESTARTS = 3

GFN1 = "GFN1-xTB"
GFN2 = "GFN2-xTB"

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_threads() -> None:
    """One OpenMP/BLAS thread per process (must run before tblite starts)."""
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    os.environ.setdefault("OMP_STACKSIZE", "256M")


@contextmanager
def single_threaded():
    """Scoped one-thread limit for already loaded OpenMP/BLAS runtimes (tblite's libgomp).

    Needed when the generator runs inside a process that did not start with
    OMP_NUM_THREADS=1 (e.g. under pytest): small xTB jobs with several
    OpenMP threads are slower, and on a loaded machine dramatically so.
    Uses threadpoolctl if it is installed; otherwise a no-op.
    """
    try:
        import tblite.ase  # noqa: F401  (loads the OpenMP runtime that must be limited)
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1):
        yield


# ---------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    name: str
    # crystals
    crystals: tuple[str, ...]
    crystal_train: tuple[int, int, int]  # (n_rattle, n_strain, n_md) per chemistry
    crystal_test: tuple[int, int, int]
    crystal_md_warmup: int = 10
    crystal_md_every: int = 5
    crystal_unit_cells: bool = False  # True: no supercell (cheap; for tests)
    crystal_chunk_size: int = 20  # max structures per cached crystal chunk
    crystal_sigma_factor: float = 1.0  # multiplies every chemistry's rattle amplitude
    crystal_strain_factor: float = 1.0  # multiplies every chemistry's maximum strain
    crystal_T_factor: float = 1.0  # multiplies every chemistry's MD temperature
    # molecules
    n_train_molecules: int | None = None  # None: every eligible molecule not held out
    n_test_molecules: int = 3
    train_molecules: tuple[str, ...] | None = None  # explicit lists override the seeded choice
    test_molecules: tuple[str, ...] | None = None
    max_heavy_atoms: int = 10
    mol_frames_train: int = 10  # frames per training molecule
    mol_frames_test: int = 10  # frames per test molecule
    mol_frames_per_traj: int = 5
    mol_md_warmup: int = 40
    mol_md_every: int = 20
    mol_T_range: tuple[float, float] = (300.0, 1000.0)
    # DBS
    dbs_fraction: float = 0.05
    dbs_min: int = 10
    # filter
    force_filter: float = DEFAULT_FORCE_FILTER
    # optional DFT tier
    dft_n_structures: int = 4
    dft_basis: str = "def2-SVP"


ALL_CRYSTALS: tuple[str, ...] = (
    "C_diamond",
    "C_graphite",
    "Si_diamond",
    "SiC_3C",
    "SiO2_alpha_quartz",
    "MgO_rocksalt",
    "LiF_rocksalt",
    "LiH_rocksalt",
    "Al_fcc",
    "H2O_ice_Ic",
    "CO2_dry_ice",
    "urea",
)

PRESETS: dict[str, Preset] = {
    # 156 crystal, 36 test crystal, 150 molecule, 10 DBS, 30 + 30 test molecule
    "tiny": Preset(
        name="tiny",
        crystals=ALL_CRYSTALS,
        crystal_train=(5, 4, 4),
        crystal_test=(1, 1, 1),
        n_train_molecules=30,
        n_test_molecules=5,
        mol_frames_train=5,
        mol_frames_test=6,
        mol_frames_per_traj=3,
        dbs_fraction=0.05,
        dbs_min=10,
    ),
    # ~2000 crystal, ~200 test crystal, ~2000 molecule, 1 % DBS (>= 20), ~200 + 200 test molecule
    "small": Preset(
        name="small",
        crystals=ALL_CRYSTALS,
        crystal_train=(60, 50, 57),
        crystal_test=(6, 5, 6),
        n_train_molecules=None,
        n_test_molecules=6,
        mol_frames_train=36,
        mol_frames_test=34,
        mol_frames_per_traj=6,
        dbs_fraction=0.01,
        dbs_min=20,
        dft_n_structures=12,
    ),
}


# The "contrast" make-up: a second data set built to differ from the standard one. Its crystals
# are hotter and more distorted (rattles x2.5, strains x2, MD temperatures x2), so their forces are
# several times the molecules', and the molecules' elements appear in them only sparsely (no H or
# N; C only in SiC, O only in MgO).
CONTRAST_CRYSTALS: tuple[str, ...] = ("Si_diamond", "SiC_3C", "MgO_rocksalt", "LiF_rocksalt", "Al_fcc")
CONTRAST_FACTORS = {"crystal_sigma_factor": 2.5, "crystal_strain_factor": 2.0, "crystal_T_factor": 2.0}
MAKEUPS = ("standard", "contrast")


def contrast(preset: Preset) -> Preset:
    """``preset`` in the contrast make-up: the same size class (crystal counts scaled to the fewer
    chemistries), the same molecules, splits and DBS rules."""
    per_chemistry = len(preset.crystals) / len(CONTRAST_CRYSTALS)

    def scaled(counts: tuple[int, int, int]) -> tuple[int, int, int]:
        return tuple(max(1, round(n * per_chemistry)) for n in counts)

    return dataclasses.replace(
        preset,
        name=f"{preset.name}_contrast",
        crystals=CONTRAST_CRYSTALS,
        crystal_train=scaled(preset.crystal_train),
        crystal_test=scaled(preset.crystal_test),
        **CONTRAST_FACTORS,
    )


# ---------------------------------------------------------------------------
# Structure builders
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CrystalSpec:
    build: Callable[[], Any]  # unit cell builder -> ase.Atoms
    repeat: tuple[int, int, int]
    sigma: float  # rattle amplitude, A
    md_T: float  # K
    md_dt_fs: float
    strain_max: float = 0.03


def _ice_ic():
    """Proton-ordered cubic ice: O on a diamond lattice, ice rules obeyed.

    Every O-O bond (4 per O) carries one H.  Orienting the 4-regular periodic
    bond graph along an Eulerian circuit gives every O exactly two outgoing
    bonds, i.e. two covalent H (O-H = 0.98 A along the bond).
    """
    from ase import Atoms
    from ase.build import bulk

    a = 6.35
    ox = bulk("O", "diamond", a=a, cubic=True)
    pos, cell = ox.get_positions(), ox.cell.array
    n = len(ox)
    edges = []  # (i, j, vector i->j)
    for i in range(n):
        for j in range(i + 1, n):
            for shift in np.ndindex(3, 3, 3):
                d = pos[j] + (np.array(shift) - 1) @ cell - pos[i]
                if np.linalg.norm(d) < 0.45 * a:
                    edges.append((i, j, d))
    adj: dict[int, list[int]] = {i: [] for i in range(n)}
    for k, (i, j, _) in enumerate(edges):
        adj[i].append(k)
        adj[j].append(k)
    used = [False] * len(edges)
    directed: list[tuple[int, np.ndarray]] = []  # (donor, vector donor->acceptor)
    # Hierholzer: walk unused edges; every closed walk orients in = out.
    for start in range(n):
        stack = [start]
        while stack:
            v = stack[-1]
            while adj[v] and used[adj[v][-1]]:
                adj[v].pop()
            if not adj[v]:
                stack.pop()
                continue
            k = adj[v].pop()
            used[k] = True
            i, j, d = edges[k]
            if v == i:
                directed.append((i, d))
                stack.append(j)
            else:
                directed.append((j, -d))
                stack.append(i)
    symbols = ["O"] * n
    positions = list(pos)
    for donor, d in directed:
        symbols.append("H")
        positions.append(pos[donor] + 0.98 * d / np.linalg.norm(d))
    atoms = Atoms(symbols, positions=positions, cell=cell, pbc=True)
    atoms.wrap()
    return atoms


def _graphite():
    from ase.spacegroup import crystal

    return crystal(
        ["C", "C"], [(0, 0, 0.25), (1 / 3, 2 / 3, 0.25)], spacegroup=194,
        cellpar=[2.464, 2.464, 6.711, 90, 90, 120],
    )


def _quartz():
    from ase.spacegroup import crystal

    # P3_121 setting: Si on 3a (x, 0, 1/3); Si-O = 1.605 / 1.614 A
    return crystal(
        ["Si", "O"], [(0.4697, 0.0, 1 / 3), (0.4135, 0.2669, 1 / 3 - 0.1191)], spacegroup=152,
        cellpar=[4.916, 4.916, 5.405, 90, 90, 120],
    )


def _dry_ice():
    from ase.spacegroup import crystal

    return crystal(
        ["C", "O"], [(0, 0, 0), (0.1185, 0.1185, 0.1185)], spacegroup=205,
        cellpar=[5.624, 5.624, 5.624, 90, 90, 90],
    )


def _urea():
    from ase.spacegroup import crystal

    return crystal(
        ["C", "O", "N", "H", "H"],
        [(0.0, 0.5, 0.3260), (0.0, 0.5, 0.5953), (0.1459, 0.6459, 0.1766),
         (0.2575, 0.7575, 0.2827), (0.1441, 0.6441, -0.0380)],
        spacegroup=113, cellpar=[5.565, 5.565, 4.684, 90, 90, 90],
    )


def _bulk(*args, **kwargs):
    def build():
        from ase.build import bulk

        return bulk(*args, **kwargs)

    return build


CRYSTALS: dict[str, CrystalSpec] = {
    "C_diamond": CrystalSpec(_bulk("C", "diamond", a=3.567), (2, 2, 2), 0.03, 600.0, 1.0, 0.02),
    "C_graphite": CrystalSpec(_graphite, (2, 2, 1), 0.03, 600.0, 1.0),
    "Si_diamond": CrystalSpec(_bulk("Si", "diamond", a=5.431), (2, 2, 2), 0.05, 600.0, 1.0),
    "SiC_3C": CrystalSpec(_bulk("SiC", "zincblende", a=4.359), (2, 2, 2), 0.03, 600.0, 1.0, 0.02),
    "SiO2_alpha_quartz": CrystalSpec(_quartz, (1, 1, 2), 0.03, 600.0, 1.0),
    "MgO_rocksalt": CrystalSpec(_bulk("MgO", "rocksalt", a=4.212), (2, 2, 2), 0.05, 600.0, 1.0),
    "LiF_rocksalt": CrystalSpec(_bulk("LiF", "rocksalt", a=4.026), (2, 2, 2), 0.05, 600.0, 1.0),
    "LiH_rocksalt": CrystalSpec(_bulk("LiH", "rocksalt", a=4.084), (2, 2, 2), 0.05, 400.0, 0.5),
    "Al_fcc": CrystalSpec(_bulk("Al", "fcc", a=4.05), (2, 2, 2), 0.08, 600.0, 1.0),
    "H2O_ice_Ic": CrystalSpec(_ice_ic, (1, 1, 1), 0.04, 200.0, 0.5),
    "CO2_dry_ice": CrystalSpec(_dry_ice, (1, 1, 1), 0.02, 150.0, 1.0),
    "urea": CrystalSpec(_urea, (1, 1, 1), 0.03, 250.0, 0.5),
}


def build_crystal(name: str, unit_cell: bool = False):
    """Ideal (unperturbed) periodic cell for a chemistry; supercell unless ``unit_cell``."""
    spec = CRYSTALS[name]
    atoms = spec.build()
    if not unit_cell:
        atoms = atoms.repeat(spec.repeat)
    atoms.pbc = True
    return _clean(atoms)


def eligible_molecules(max_heavy_atoms: int = 10) -> list[str]:
    """Closed-shell, multi-atom H/C/N/O molecules of ase.collections.g2 (sorted)."""
    from ase.collections import g2

    names = []
    for name in g2.names:
        atoms = g2[name]
        symbols = atoms.get_chemical_symbols()
        if len(atoms) < 2 or not set(symbols) <= {"H", "C", "N", "O"}:
            continue
        if sum(s != "H" for s in symbols) > max_heavy_atoms:
            continue
        if np.abs(atoms.get_initial_magnetic_moments()).sum() > 0:
            continue
        if sum(atoms.numbers) % 2:
            continue
        names.append(name)
    return sorted(names)


def build_molecule(name: str):
    from ase.collections import g2

    atoms = _clean(g2[name])
    atoms.pbc = False
    atoms.cell = np.zeros((3, 3))
    return atoms


def split_molecules(preset: Preset, seed: int) -> tuple[list[str], list[str]]:
    """Seeded hold-out of whole molecules: returns (train names, test names)."""
    pool = eligible_molecules(preset.max_heavy_atoms)
    if preset.test_molecules is not None:
        test = list(preset.test_molecules)
    else:
        rng = _rng(seed, "molecule-split")
        # test molecules: at least 2 heavy atoms and 5 atoms, so they are not trivial
        cand = [n for n in pool if _n_heavy(n) >= 2 and len(build_molecule(n)) >= 5]
        test = [cand[i] for i in rng.permutation(len(cand))[: preset.n_test_molecules]]
    if preset.train_molecules is not None:
        train = list(preset.train_molecules)
    else:
        rest = [n for n in pool if n not in test]
        rng = _rng(seed, "molecule-train")
        order = rng.permutation(len(rest))
        if preset.n_train_molecules is not None:
            order = order[: preset.n_train_molecules]
        train = [rest[i] for i in order]
    overlap = set(train) & set(test)
    if overlap:
        raise ValueError(f"train and test molecules overlap: {sorted(overlap)}")
    return sorted(train), sorted(test)


def _n_heavy(name: str) -> int:
    from ase.collections import g2

    return sum(s != "H" for s in g2[name].get_chemical_symbols())


def _clean(atoms):
    """Plain copy: numbers, positions, cell, pbc only (no calc, momenta, magmoms)."""
    from ase import Atoms

    return Atoms(numbers=atoms.numbers.copy(), positions=atoms.positions.copy(),
                 cell=atoms.cell.array.copy(), pbc=atoms.pbc.copy())


# ---------------------------------------------------------------------------
# Labelling helpers
# ---------------------------------------------------------------------------


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(name.encode())]))


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
    work = _clean(atoms)
    work.calc = make_xtb(method)
    return _read_labels(work, stress, force_filter)


def _labelled(atoms, e, f, s, method, config_type, source, struct_id, **extra):
    out = _clean(atoms)
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
        atoms = _clean(atoms0)
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
                frames.append((_clean(atoms), e, f, s))
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


# ---------------------------------------------------------------------------
# Chunks
# ---------------------------------------------------------------------------


def chunk_key(spec: dict[str, Any]) -> str:
    blob = json.dumps({"spec": spec, "version": SCRIPT_VERSION}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def chunk_stem(spec: dict[str, Any]) -> str:
    label = f"-{spec['config_type']}{spec['part']}" if spec["kind"] == "crystal" else ""
    return f"{spec['kind']}-{spec['source']}-{spec['split']}{label}-{chunk_key(spec)}"


def run_crystal_chunk(spec: dict[str, Any], cache_dir: Path):
    """One part of one snapshot kind (rattle | strain | md) of one chemistry and split."""
    name, split, ctype, part = spec["source"], spec["split"], spec["config_type"], spec["part"]
    cs = CRYSTALS[name]
    rng = _rng(spec["seed"], f"crystal/{name}/{split}/{ctype}/{part}")
    base = build_crystal(name, unit_cell=spec["unit_cell"])
    n = spec["n"]
    ff = spec["force_filter"]
    skipped: Counter = Counter()
    out = []

    def add(atoms, e, f, s, **extra):
        sid = f"{name}/{split}/{ctype}{part}/{len(out)}"
        out.append(_labelled(atoms, e, f, s, GFN1, ctype, name, sid, **extra))

    rattle, max_strain, temperature = spec["sigma"], spec["strain_max"], spec["md_T"]
    if ctype in ("rattle", "strain"):
        for _ in range(n):
            atoms = _clean(base)
            sigma = rattle
            if ctype == "strain":
                eps = random_strain(rng, max_strain)
                atoms.set_cell(base.cell.array @ (np.eye(3) + eps), scale_atoms=True)
                sigma = rattle / 2
            atoms.positions += rng.normal(0.0, sigma, size=atoms.positions.shape)
            try:
                add(atoms, *singlepoint(atoms, GFN1, True, ff))
            except Skip as sk:
                skipped[sk.reason] += 1
    elif ctype == "md":
        start = _clean(base)
        start.positions += rng.normal(0.0, rattle / 2, size=start.positions.shape)
        for atoms, e, f, s in md_frames(start, GFN1, rng, n, temperature, cs.md_dt_fs, 0.02,
                                        spec["md_warmup"], spec["md_every"], True, ff, skipped):
            add(atoms, e, f, s, md_T_K=temperature)
    else:
        raise ValueError(f"unknown crystal config_type {ctype!r}")
    return out, skipped


def run_molecule_chunk(spec: dict[str, Any], cache_dir: Path):
    name, split = spec["source"], spec["split"]
    rng = _rng(spec["seed"], f"molecule/{name}/{split}")
    base = build_molecule(name)
    ff = spec["force_filter"]
    skipped: Counter = Counter()
    out = []
    n_total, per_traj = spec["n_frames"], spec["frames_per_traj"]
    Tlo, Thi = spec["T_range"]
    n_traj = math.ceil(n_total / per_traj)
    idx = 0
    for t in range(n_traj):
        n = min(per_traj, n_total - t * per_traj)
        T = float(rng.uniform(Tlo, Thi))
        for atoms, e, f, _ in md_frames(base, GFN2, rng, n, T, 0.5, 0.01, spec["md_warmup"],
                                        spec["md_every"], False, ff, skipped):
            extra = {"md_T_K": round(T, 3)}
            if spec["with_gfn1"]:
                try:
                    e1, f1, _ = singlepoint(atoms, GFN1, False, ff)
                except Skip as sk:
                    skipped[f"gfn1_{sk.reason}"] += 1
                    continue
                extra["GFN1_energy"] = e1
            lab = _labelled(atoms, e, f, None, GFN2, "md", name, f"{name}/{split}/{idx}", **extra)
            if spec["with_gfn1"]:
                lab.arrays["GFN1_forces"] = np.array(f1)
            out.append(lab)
            idx += 1
    return out, skipped


def run_relabel_chunk(spec: dict[str, Any], cache_dir: Path):
    """GFN1 relabelling of selected frames of a cached molecule chunk (DBS)."""
    src = load_chunk(cache_dir, spec["source_stem"])[0]
    ff = spec["force_filter"]
    skipped: Counter = Counter()
    out = []
    for i in spec["indices"]:
        atoms = src[i]
        try:
            e, f, _ = singlepoint(atoms, spec["method"], False, ff)
        except Skip as sk:
            skipped[sk.reason] += 1
            continue
        out.append(_labelled(atoms, e, f, None, spec["method"], atoms.info["config_type"],
                             atoms.info["source"], atoms.info["struct_id"]))
    return out, skipped


def pyscf_available() -> bool:
    try:
        import pyscf  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def pyscf_label(atoms, xc: str, basis: str):
    from ase.units import Bohr, Hartree
    from pyscf import dft, gto

    nelec = int(sum(atoms.numbers))
    mol = gto.M(atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
                unit="Angstrom", basis=basis, charge=0, spin=nelec % 2, verbose=0)
    mf = dft.RKS(mol) if nelec % 2 == 0 else dft.UKS(mol)
    mf.xc = xc
    mf.conv_tol = 1e-9
    e = mf.kernel()
    if not mf.converged:
        raise Skip("dft_scf_not_converged")
    grad = mf.nuc_grad_method().kernel()
    return float(e) * Hartree, -np.asarray(grad) * Hartree / Bohr


def run_dft_chunk(spec: dict[str, Any], cache_dir: Path):
    src = load_chunk(cache_dir, spec["source_stem"])[0]
    skipped: Counter = Counter()
    out = []
    for i in spec["indices"]:
        atoms = src[i]
        try:
            labels = {}
            for xc in ("PBE", "B3LYP"):
                e, f = pyscf_label(atoms, xc, spec["basis"])
                if not (np.isfinite(e) and np.isfinite(f).all()):
                    raise Skip("nonfinite_label")
                labels[xc] = (e, f)
        except Skip as sk:
            skipped[sk.reason] += 1
            continue
        except Exception as exc:  # noqa: BLE001
            skipped[f"dft_error_{type(exc).__name__}"] += 1
            continue
        (ep, fp), (eb, fb) = labels["PBE"], labels["B3LYP"]
        lab = _labelled(atoms, ep, fp, None, f"PBE/{spec['basis']}", atoms.info["config_type"],
                        atoms.info["source"], atoms.info["struct_id"], B3LYP_energy=eb)
        lab.arrays["B3LYP_forces"] = np.array(fb)
        out.append(lab)
    return out, skipped


RUNNERS = {
    "crystal": run_crystal_chunk,
    "molecule": run_molecule_chunk,
    "relabel": run_relabel_chunk,
    "dft": run_dft_chunk,
}


# ----------------------------------------------------------------------------
# Cache
# ----------------------------------------------------------------------------


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_write_xyz(path: Path, images: Sequence[Any]) -> None:
    from ase.io import write

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if images:
        write(tmp, list(images), format="extxyz")
    else:
        tmp.write_text("")
    os.replace(tmp, path)


def is_cached(cache_dir: Path, stem: str) -> bool:
    return (cache_dir / f"{stem}.json").exists() and (cache_dir / f"{stem}.extxyz").exists()


def load_chunk(cache_dir: Path, stem: str):
    from ase.io import read

    meta = json.loads((cache_dir / f"{stem}.json").read_text())
    images = read(cache_dir / f"{stem}.extxyz", index=":", format="extxyz") if meta["n"] else []
    for a in images:
        a.calc = None
    return images, meta


def compute_chunk(job: tuple[dict[str, Any], str]) -> dict[str, Any]:
    """Run one chunk and store it in the cache (the .json is the completion marker)."""
    spec, cache_dir_s = job
    cache_dir = Path(cache_dir_s)
    stem = chunk_stem(spec)
    t0 = time.perf_counter()
    with single_threaded():
        images, skipped = RUNNERS[spec["kind"]](spec, cache_dir)
    meta = {"stem": stem, "spec": spec, "n": len(images), "skipped": dict(skipped),
            "compute_time_s": round(time.perf_counter() - t0, 3), "pid": os.getpid()}
    _atomic_write_xyz(cache_dir / f"{stem}.extxyz", images)
    _atomic_write_text(cache_dir / f"{stem}.json", json.dumps(meta, indent=1, sort_keys=True))
    return meta


def _worker_init() -> None:
    limit_threads()


MAX_POOL_RESTARTS = 2


def run_chunks(specs: Sequence[dict[str, Any]], cache_dir: Path, workers: int, desc: str,
               progress: bool, log: Callable[[str], None] = print) -> dict[str, int]:
    """Compute every spec whose chunk is not cached; returns {'computed', 'cached'}.

    With ``workers > 1`` chunks run in spawned processes (one thread each); a
    caller that is a script must then guard its entry point with
    ``if __name__ == "__main__":``.  A dead worker process (e.g. a crash in a
    native library) restarts the pool for the unfinished chunks
    (MAX_POOL_RESTARTS times); finished chunks are kept in the cache anyway.
    """
    from tqdm import tqdm

    todo = [s for s in specs if not is_cached(cache_dir, chunk_stem(s))]
    n_cached = len(specs) - len(todo)
    bar = tqdm(total=len(specs), initial=n_cached, desc=desc, unit="chunk",
               disable=not progress, dynamic_ncols=True)
    n_struct = 0

    def report(meta):
        nonlocal n_struct
        n_struct += meta["n"]
        bar.update(1)
        bar.set_postfix(structures=n_struct, last=meta["spec"]["source"][:18])
        if meta["skipped"]:
            sp = meta["spec"]
            msg = f"  {sp['kind']} {sp['source']} ({sp['split']}): skipped {meta['skipped']}"
            bar.write(msg) if progress else log(msg)

    remaining = [(s, str(cache_dir)) for s in todo]
    if workers <= 1 or len(remaining) <= 1:
        for job in remaining:
            report(compute_chunk(job))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        limit_threads()  # inherited by the spawned workers
        restarts = 0
        while remaining:
            ex = ProcessPoolExecutor(max_workers=min(workers, len(remaining)),
                                     mp_context=mp.get_context("spawn"), initializer=_worker_init)
            try:
                futures = {ex.submit(compute_chunk, job): k for k, job in enumerate(remaining)}
                done = set()
                try:
                    for fut in as_completed(futures):
                        report(fut.result())
                        done.add(futures[fut])
                except BrokenProcessPool:
                    restarts += 1
                    if restarts > MAX_POOL_RESTARTS:
                        raise RuntimeError(
                            "worker processes keep dying (is the calling script guarded by "
                            "`if __name__ == '__main__'`?); finished chunks are cached, rerun to resume") from None
                    log(f"[make_multifidelity_data] a worker process died; restarting the pool "
                        f"({restarts}/{MAX_POOL_RESTARTS})")
                remaining = [job for k, job in enumerate(remaining) if k not in done]
            finally:
                ex.shutdown(wait=True, cancel_futures=True)
    bar.close()
    return {"computed": len(todo), "cached": n_cached}


# ---------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------


def plan_primary(preset: Preset, seed: int, train_mols: Sequence[str], test_mols: Sequence[str]):
    crystal = []
    for split, counts in (("train", preset.crystal_train), ("test", preset.crystal_test)):
        for ctype, n_total in zip(("md", "rattle", "strain"), (counts[2], counts[0], counts[1])):
            # parts of at most crystal_chunk_size structures (resume granularity;
            # every md part is an independent trajectory)
            n_parts = math.ceil(n_total / preset.crystal_chunk_size)
            sizes = [n_total // n_parts + (k < n_total % n_parts) for k in range(n_parts)]
            for name in preset.crystals:
                for part, n in enumerate(sizes):
                    chemistry = CRYSTALS[name]
                    crystal.append({
                        "kind": "crystal", "source": name, "split": split, "config_type": ctype,
                        "part": part, "n": n, "seed": seed,
                        "sigma": chemistry.sigma * preset.crystal_sigma_factor,
                        "strain_max": chemistry.strain_max * preset.crystal_strain_factor,
                        "md_T": chemistry.md_T * preset.crystal_T_factor,
                        "md_warmup": preset.crystal_md_warmup, "md_every": preset.crystal_md_every,
                        "unit_cell": preset.crystal_unit_cells, "force_filter": preset.force_filter,
                    })
    molecule = []
    for split, names, n in (("train", train_mols, preset.mol_frames_train),
                            ("test", test_mols, preset.mol_frames_test)):
        for name in names:
            molecule.append({
                "kind": "molecule", "source": name, "split": split, "seed": seed,
                "n_frames": n, "frames_per_traj": preset.mol_frames_per_traj,
                "md_warmup": preset.mol_md_warmup, "md_every": preset.mol_md_every,
                "T_range": list(preset.mol_T_range), "with_gfn1": split == "test",
                "force_filter": preset.force_filter,
            })
    return crystal, molecule


def plan_dbs(preset: Preset, seed: int, mol_train_specs, cache_dir: Path):
    """Seeded choice of D2 training frames to relabel with GFN1, one chunk per molecule."""
    index = []  # (spec, frame index)
    for spec in mol_train_specs:
        n = load_chunk(cache_dir, chunk_stem(spec))[1]["n"]
        index.extend((spec, i) for i in range(n))
    n_total = len(index)
    n_dbs = min(n_total, max(preset.dbs_min, int(round(preset.dbs_fraction * n_total))))
    chosen = sorted(_rng(seed, "dbs").choice(n_total, size=n_dbs, replace=False).tolist()) if n_dbs else []
    per_source: dict[str, dict[str, Any]] = {}
    for k in chosen:
        spec, i = index[k]
        stem = chunk_stem(spec)
        if stem not in per_source:
            per_source[stem] = {"kind": "relabel", "source": spec["source"], "split": "dbs",
                                "source_stem": stem, "indices": [], "method": GFN1,
                                "force_filter": preset.force_filter}
        per_source[stem]["indices"].append(i)
    return list(per_source.values()), n_total


def plan_dft(preset: Preset, mol_test_specs, cache_dir: Path):
    specs = []
    chosen: list[tuple[dict[str, Any], int]] = []
    lengths = [load_chunk(cache_dir, chunk_stem(s))[1]["n"] for s in mol_test_specs]
    i = 0
    while len(chosen) < preset.dft_n_structures and i < max(lengths, default=0):
        for spec, n in zip(mol_test_specs, lengths):
            if i < n and len(chosen) < preset.dft_n_structures:
                chosen.append((spec, i))
        i += 1
    for spec in mol_test_specs:
        idx = [i for s, i in chosen if s is spec]
        if idx:
            specs.append({"kind": "dft", "source": spec["source"], "split": "dft",
                          "source_stem": chunk_stem(spec), "indices": idx,
                          "basis": preset.dft_basis})
    return specs


# ---------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------


def _gather(cache_dir: Path, specs: Iterable[dict[str, Any]]):
    images, skipped, compute = [], Counter(), 0.0
    for spec in specs:
        imgs, meta = load_chunk(cache_dir, chunk_stem(spec))
        images.extend(imgs)
        skipped.update(meta["skipped"])
        compute += meta["compute_time_s"]
    return images, skipped, compute


def _strip(atoms, drop_info=(), drop_arrays=()):
    out = _clean(atoms)
    for k, v in atoms.info.items():
        if k not in drop_info:
            out.info[k] = v
    for k, v in atoms.arrays.items():
        if k not in ("numbers", "positions") and k not in drop_arrays:
            out.arrays[k] = v
    return out


def _relabel_copy(atoms, e_key, f_key, method, drop_info=(), drop_arrays=()):
    out = _strip(atoms, drop_info=drop_info + (e_key,), drop_arrays=drop_arrays + (f_key,))
    out.info["REF_energy"] = float(atoms.info[e_key])
    out.arrays["REF_forces"] = np.array(atoms.arrays[f_key])
    out.info["method"] = method
    return out


def set_summary(images, method, split) -> dict[str, Any]:
    from ase.data import atomic_numbers

    elements = sorted({s for a in images for s in a.get_chemical_symbols()}, key=atomic_numbers.get)
    return {
        "count": len(images),
        "n_atoms": int(sum(len(a) for a in images)),
        "elements": elements,
        "method": method,
        "split": split,
        "periodic": bool(images and all(a.pbc.all() for a in images)),
        "has_stress": bool(images and all("REF_stress" in a.info for a in images)),
        "config_types": dict(sorted(Counter(a.info["config_type"] for a in images).items())),
        "sources": sorted({a.info["source"] for a in images}),
        **label_spread(images),
    }


def label_spread(images) -> dict[str, float | None]:
    """How large a set's labels are: the RMS force component (eV/A) and the standard deviation
    of the energy per atom (eV/atom), so that data sets of different make-up can be compared."""
    if not images:
        return {"force_rms": None, "energy_per_atom_std": None}
    forces = np.concatenate([np.asarray(a.arrays["REF_forces"]).ravel() for a in images])
    per_atom = np.array([a.info["REF_energy"] / len(a) for a in images])
    return {"force_rms": float(np.sqrt(np.mean(forces**2))), "energy_per_atom_std": float(per_atom.std())}


def transfer_floor(gfn2_images, gfn1_images) -> dict[str, Any]:
    """GFN1 vs GFN2 difference on identical structures (forces per component, eV/A)."""
    if not gfn2_images:
        return {"n_structures": 0}
    f2 = np.concatenate([a.arrays["REF_forces"] for a in gfn2_images])
    f1 = np.concatenate([a.arrays["REF_forces"] for a in gfn1_images])
    d = f1 - f2
    # energies: remove the per-molecule mean offset (the methods have different references)
    de_per_atom = []
    by_src: dict[str, list[tuple[float, int]]] = {}
    for a2, a1 in zip(gfn2_images, gfn1_images):
        by_src.setdefault(a2.info["source"], []).append((a1.info["REF_energy"] - a2.info["REF_energy"], len(a2)))
    for vals in by_src.values():
        diffs = np.array([v for v, _ in vals])
        nat = np.array([n for _, n in vals])
        de_per_atom.extend(((diffs - diffs.mean()) / nat).tolist())
    de = np.abs(np.array(de_per_atom))
    return {
        "n_structures": len(gfn2_images),
        "n_atoms": int(f2.shape[0]),
        "force_mae_eV_per_A": float(np.abs(d).mean()),
        "force_rmse_eV_per_A": float(np.sqrt((d ** 2).mean())),
        "force_max_abs_diff_eV_per_A": float(np.abs(d).max()),
        "gfn2_force_rms_eV_per_A": float(np.sqrt((f2 ** 2).mean())),
        "relative_energy_mae_meV_per_atom": float(1000 * de.mean()),
        "note": "GFN1-xTB minus GFN2-xTB on test_molecule_* (same structures); energies compared "
                "after removing the mean GFN1-GFN2 offset of each molecule",
    }


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------


def generate(preset: Preset, out: os.PathLike, seed: int = 0, workers: int = 1,
             dft: bool = False, progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Generate every set of ``preset`` into ``out``; returns the manifest dict."""
    t_start = time.perf_counter()
    out = Path(out)
    cache_dir = out / ".cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    unknown = [c for c in preset.crystals if c not in CRYSTALS]
    if unknown:
        raise ValueError(f"unknown crystal chemistries: {unknown}")

    train_mols, test_mols = split_molecules(preset, seed)
    crystal_specs, mol_specs = plan_primary(preset, seed, train_mols, test_mols)
    primary = crystal_specs + mol_specs  # crystal (md first) chunks are the expensive ones
    log(f"[make_multifidelity_data] preset={preset.name} seed={seed} workers={workers} "
        f"out={out} chunks={len(primary)} train_molecules={len(train_mols)} test_molecules={test_mols}")
    log(f"[make_multifidelity_data] force filter: drop structures with max_i |F_i| > {preset.force_filter} eV/A; "
        "rattle sigma (A): " + ", ".join(f"{c}={CRYSTALS[c].sigma * preset.crystal_sigma_factor:g}" for c in preset.crystals))

    stats: dict[str, dict[str, int]] = {}
    stats["primary"] = run_chunks(primary, cache_dir, workers, "xTB chunks", progress, log)
    mol_train = [s for s in mol_specs if s["split"] == "train"]
    mol_test = [s for s in mol_specs if s["split"] == "test"]
    dbs_specs, n_d2 = plan_dbs(preset, seed, mol_train, cache_dir)
    stats["dbs"] = run_chunks(dbs_specs, cache_dir, workers, "DBS relabel", progress, log)
    dft_specs: list[dict[str, Any]] = []
    dft_status = "not requested"
    if dft:
        if pyscf_available():
            import pyscf

            dft_specs = plan_dft(preset, mol_test, cache_dir)
            stats["dft"] = run_chunks(dft_specs, cache_dir, workers, "DFT (PySCF)", progress, log)
            dft_status = f"done: PySCF {pyscf.__version__}, PBE and B3LYP / {preset.dft_basis}"
        else:
            dft_status = "skipped: pyscf is not installed"
            log("[make_multifidelity_data] --dft: pyscf is not importable, skipping the DFT tier")

    # ---- assemble -------------------------------------------------------
    sets: dict[str, tuple[list[Any], str, str]] = {}
    skipped: dict[str, dict[str, int]] = {}
    compute_s = 0.0

    def gather(name, specs):
        nonlocal compute_s
        imgs, sk, c = _gather(cache_dir, specs)
        skipped[name] = dict(sorted(sk.items()))
        compute_s += c
        return imgs

    ctype_order = {"rattle": 0, "strain": 1, "md": 2}

    def crystal_order(spec):  # output order: chemistry, config type, part
        return (preset.crystals.index(spec["source"]), ctype_order[spec["config_type"]], spec["part"])

    c_train = gather("crystal_gfn1", sorted((s for s in crystal_specs if s["split"] == "train"), key=crystal_order))
    c_test = gather("test_crystal_gfn1", sorted((s for s in crystal_specs if s["split"] == "test"), key=crystal_order))
    m_train = gather("molecule_gfn2", mol_train)
    dbs = gather("molecule_gfn1_dbs", dbs_specs)
    m_test = gather("test_molecule_gfn2", mol_test)
    extra_keys = ("GFN1_energy",), ("GFN1_forces",)
    sets["crystal_gfn1"] = (c_train, GFN1, "train")
    sets["molecule_gfn2"] = (m_train, GFN2, "train")
    sets["molecule_gfn1_dbs"] = (dbs, GFN1, "train")
    sets["test_crystal_gfn1"] = (c_test, GFN1, "test")
    sets["test_molecule_gfn2"] = ([_strip(a, *extra_keys) for a in m_test], GFN2, "test")
    sets["test_molecule_gfn1"] = (
        [_relabel_copy(a, "GFN1_energy", "GFN1_forces", GFN1) for a in m_test], GFN1, "test")
    if dft_specs:
        d = gather("dft_molecule_pbe", dft_specs)
        skipped["dft_molecule_b3lyp"] = skipped["dft_molecule_pbe"]
        basis = preset.dft_basis
        sets["dft_molecule_pbe"] = ([_strip(a, ("B3LYP_energy",), ("B3LYP_forces",)) for a in d],
                                    f"PBE/{basis}", "dft")
        sets["dft_molecule_b3lyp"] = (
            [_relabel_copy(a, "B3LYP_energy", "B3LYP_forces", f"B3LYP/{basis}") for a in d],
            f"B3LYP/{basis}", "dft")

    for name, (images, _, _) in sets.items():
        _atomic_write_xyz(out / f"{name}.extxyz", images)

    manifest = {
        "script": "scripts/make_multifidelity_data.py",
        "script_version": SCRIPT_VERSION,
        "preset": preset.name,
        "preset_params": dataclasses.asdict(preset),
        "seed": seed,
        "generated_at_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wall_time_s": round(time.perf_counter() - t_start, 2),
        "compute_time_s": round(compute_s, 2),
        "compute_time_note": "sum of per-chunk labelling time (single core each), also counts chunks "
                             "restored from the cache",
        "workers": workers,
        "chunks": stats,
        "xtb": {"accuracy": XTB_ACCURACY, "max_iterations": XTB_MAX_ITER,
                "electronic_temperature_K": ELECTRONIC_TEMPERATURE_K, "kpoints": "Gamma only (tblite)"},
        "force_filter": {"max_atom_force_norm_eV_per_A": preset.force_filter,
                         "rule": "drop a structure if any per-atom |F| exceeds the threshold, a label is "
                                 "not finite or the SCF does not converge"},
        "crystal_sampling": {
            name: {"n_atoms": len(build_crystal(name, preset.crystal_unit_cells)),
                   "rattle_sigma_A": CRYSTALS[name].sigma,
                   "strain_max": CRYSTALS[name].strain_max,
                   "md_T_K": CRYSTALS[name].md_T, "md_dt_fs": CRYSTALS[name].md_dt_fs}
            for name in preset.crystals
        },
        "molecules": {"train": list(train_mols), "test": list(test_mols),
                      "n_dbs_pool": n_d2},
        "keys": {"energy": "info['REF_energy'] (eV)", "forces": "arrays['REF_forces'] (eV/A)",
                 "stress": "info['REF_stress'] Voigt-6 xx yy zz yz xz xy (eV/A^3, ASE sign), periodic only",
                 "config_type": "info['config_type']", "source": "info['source']",
                 "method": "info['method']", "struct_id": "info['struct_id']"},
        "sets": {name: {"file": f"{name}.extxyz", **set_summary(images, method, split)}
                 for name, (images, method, split) in sets.items()},
        "skipped": skipped,
        "transfer_floor": transfer_floor(sets["test_molecule_gfn2"][0], sets["test_molecule_gfn1"][0]),
        "dft": dft_status,
    }
    _atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    n_skip = sum(sum(v.values()) for v in skipped.values())
    log("[make_multifidelity_data] " + ", ".join(f"{k}={v[0].__len__()}" for k, v in sets.items())
        + f"; skipped={n_skip} {json.dumps({k: v for k, v in skipped.items() if v})}")
    tf = manifest["transfer_floor"]
    if tf.get("n_structures"):
        log(f"[make_multifidelity_data] transfer floor (GFN1 vs GFN2 forces on test molecules): "
            f"MAE={tf['force_mae_eV_per_A']:.4f} RMSE={tf['force_rmse_eV_per_A']:.4f} eV/A")
    log(f"[make_multifidelity_data] done in {manifest['wall_time_s']} s "
        f"(labelling compute {manifest['compute_time_s']} s)")
    return manifest


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--makeup", choices=MAKEUPS, default="standard",
                   help="contrast: a second data set built to differ (hotter, more distorted crystals "
                        "with few of the molecules' elements; see CONTRAST_CRYSTALS)")
    p.add_argument("--out", default=None, help="output directory (default recipes/data/<preset>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--force-filter", type=float, default=None,
                   help=f"max per-atom force norm in eV/A (default {DEFAULT_FORCE_FILTER})")
    p.add_argument("--dft", action="store_true", help="add a PySCF PBE/B3LYP tier (needs pyscf)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--clean-cache", action="store_true",
                   help="delete OUT/.cache after a successful run (disables resume of this output)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    limit_threads()
    preset = PRESETS[args.preset]
    if args.makeup == "contrast":
        preset = contrast(preset)
    if args.force_filter is not None:
        preset = dataclasses.replace(preset, force_filter=args.force_filter)
    out = args.out or os.path.join("recipes", "data", preset.name)
    generate(preset, out, seed=args.seed, workers=max(1, args.workers), dft=args.dft,
             progress=not args.no_progress)
    if args.clean_cache:
        import shutil

        shutil.rmtree(Path(out) / ".cache", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
