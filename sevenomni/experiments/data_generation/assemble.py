"""Assembling the sets from cached chunks, and what the manifest says about them: each set's summary
and label spread, and the GFN1-vs-GFN2 transfer floor on the paired test molecules.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from sevenomni.experiments.data_generation.cache import chunk_stem, load_chunk
from sevenomni.experiments.data_generation.structures import plain_copy


def gather_chunks(cache_dir: Path, specs: Iterable[dict[str, Any]]):
    images, skipped, compute = [], Counter(), 0.0
    for spec in specs:
        imgs, meta = load_chunk(cache_dir, chunk_stem(spec))
        images.extend(imgs)
        skipped.update(meta["skipped"])
        compute += meta["compute_time_s"]
    return images, skipped, compute


def stripped_copy(atoms, drop_info=(), drop_arrays=()):
    out = plain_copy(atoms)
    for k, v in atoms.info.items():
        if k not in drop_info:
            out.info[k] = v
    for k, v in atoms.arrays.items():
        if k not in ("numbers", "positions") and k not in drop_arrays:
            out.arrays[k] = v
    return out


def relabelled_copy(atoms, e_key, f_key, method, drop_info=(), drop_arrays=()):
    out = stripped_copy(atoms, drop_info=drop_info + (e_key,), drop_arrays=drop_arrays + (f_key,))
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
