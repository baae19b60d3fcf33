"""Chunk runners: one chunk (a part of one chemistry's snapshots, one molecule's trajectories, a GFN1
relabelling or a PySCF tier of cached frames) in, labelled structures and skip counts out.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from sevenomni.experiments.data_generation.cache import load_chunk
from sevenomni.experiments.data_generation.labelling import Skip, labelled_copy, md_frames, random_strain, singlepoint
from sevenomni.experiments.data_generation.settings import GFN1, GFN2
from sevenomni.experiments.data_generation.streams import named_rng
from sevenomni.experiments.data_generation.structures import CRYSTALS, build_crystal, build_molecule, plain_copy


def run_crystal_chunk(spec: dict[str, Any], cache_dir: Path):
    """One part of one snapshot kind (rattle | strain | md) of one chemistry and split."""
    name, split, ctype, part = spec["source"], spec["split"], spec["config_type"], spec["part"]
    cs = CRYSTALS[name]
    rng = named_rng(spec["seed"], f"crystal/{name}/{split}/{ctype}/{part}")
    base = build_crystal(name, unit_cell=spec["unit_cell"])
    n = spec["n"]
    ff = spec["force_filter"]
    skipped: Counter = Counter()
    out = []

    def add(atoms, e, f, s, **extra):
        sid = f"{name}/{split}/{ctype}{part}/{len(out)}"
        out.append(labelled_copy(atoms, e, f, s, GFN1, ctype, name, sid, **extra))

    rattle, max_strain, temperature = spec["sigma"], spec["strain_max"], spec["md_T"]
    if ctype in ("rattle", "strain"):
        for _ in range(n):
            atoms = plain_copy(base)
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
        start = plain_copy(base)
        start.positions += rng.normal(0.0, rattle / 2, size=start.positions.shape)
        for atoms, e, f, s in md_frames(start, GFN1, rng, n, temperature, cs.md_dt_fs, 0.02,
                                        spec["md_warmup"], spec["md_every"], True, ff, skipped):
            add(atoms, e, f, s, md_T_K=temperature)
    else:
        raise ValueError(f"unknown crystal config_type {ctype!r}")
    return out, skipped


def run_molecule_chunk(spec: dict[str, Any], cache_dir: Path):
    name, split = spec["source"], spec["split"]
    rng = named_rng(spec["seed"], f"molecule/{name}/{split}")
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
            lab = labelled_copy(atoms, e, f, None, GFN2, "md", name, f"{name}/{split}/{idx}", **extra)
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
        out.append(labelled_copy(atoms, e, f, None, spec["method"], atoms.info["config_type"],
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
        lab = labelled_copy(atoms, ep, fp, None, f"PBE/{spec['basis']}", atoms.info["config_type"],
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
