"""Ideal structures before any perturbation: the crystal chemistries (periodic cells with their rattle,
strain and MD settings), the eligible g2 molecules and their seeded train/test hold-out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sevenomni.experiments.data_generation.presets import Preset
from sevenomni.experiments.data_generation.streams import named_rng


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
    return plain_copy(atoms)


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

    atoms = plain_copy(g2[name])
    atoms.pbc = False
    atoms.cell = np.zeros((3, 3))
    return atoms


def split_molecules(preset: Preset, seed: int) -> tuple[list[str], list[str]]:
    """Seeded hold-out of whole molecules: returns (train names, test names)."""
    pool = eligible_molecules(preset.max_heavy_atoms)
    if preset.test_molecules is not None:
        test = list(preset.test_molecules)
    else:
        rng = named_rng(seed, "molecule-split")
        # test molecules: at least 2 heavy atoms and 5 atoms, so they are not trivial
        cand = [n for n in pool if _n_heavy(n) >= 2 and len(build_molecule(n)) >= 5]
        test = [cand[i] for i in rng.permutation(len(cand))[: preset.n_test_molecules]]
    if preset.train_molecules is not None:
        train = list(preset.train_molecules)
    else:
        rest = [n for n in pool if n not in test]
        rng = named_rng(seed, "molecule-train")
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


def plain_copy(atoms):
    """Plain copy: numbers, positions, cell, pbc only (no calc, momenta, magmoms)."""
    from ase import Atoms

    return Atoms(numbers=atoms.numbers.copy(), positions=atoms.positions.copy(),
                 cell=atoms.cell.array.copy(), pbc=atoms.pbc.copy())
