"""``generate``: every set of a preset into one folder (plan, compute the chunks, assemble the sets,
write them and ``manifest.json``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sevenomni.experiments.data_generation.assemble import (
    gather_chunks,
    relabelled_copy,
    set_summary,
    stripped_copy,
    transfer_floor,
)
from sevenomni.experiments.data_generation.cache import atomic_write_text, atomic_write_xyz
from sevenomni.experiments.data_generation.chunks import pyscf_available
from sevenomni.experiments.data_generation.plan import plan_dbs, plan_dft, plan_primary
from sevenomni.experiments.data_generation.pool import run_chunks
from sevenomni.experiments.data_generation.presets import Preset
from sevenomni.experiments.data_generation.settings import (
    ELECTRONIC_TEMPERATURE_K,
    GFN1,
    GFN2,
    SCRIPT_VERSION,
    XTB_ACCURACY,
    XTB_MAX_ITER,
)
from sevenomni.experiments.data_generation.structures import CRYSTALS, build_crystal, split_molecules


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
        "rattle sigma (A): "
        + ", ".join(f"{c}={CRYSTALS[c].sigma * preset.crystal_sigma_factor:g}" for c in preset.crystals))

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
        imgs, sk, c = gather_chunks(cache_dir, specs)
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
    sets["test_molecule_gfn2"] = ([stripped_copy(a, *extra_keys) for a in m_test], GFN2, "test")
    sets["test_molecule_gfn1"] = (
        [relabelled_copy(a, "GFN1_energy", "GFN1_forces", GFN1) for a in m_test], GFN1, "test")
    if dft_specs:
        d = gather("dft_molecule_pbe", dft_specs)
        skipped["dft_molecule_b3lyp"] = skipped["dft_molecule_pbe"]
        basis = preset.dft_basis
        sets["dft_molecule_pbe"] = ([stripped_copy(a, ("B3LYP_energy",), ("B3LYP_forces",)) for a in d],
                                    f"PBE/{basis}", "dft")
        sets["dft_molecule_b3lyp"] = (
            [relabelled_copy(a, "B3LYP_energy", "B3LYP_forces", f"B3LYP/{basis}") for a in d],
            f"B3LYP/{basis}", "dft")

    for name, (images, _, _) in sets.items():
        atomic_write_xyz(out / f"{name}.extxyz", images)

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
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
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
