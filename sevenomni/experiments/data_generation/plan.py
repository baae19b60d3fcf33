"""Planning: the chunk specs of a preset (crystal and molecule chunks, then the DBS relabelling and the
DFT tier chosen among finished molecule chunks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sevenomni.experiments.data_generation.cache import chunk_stem, load_chunk
from sevenomni.experiments.data_generation.presets import Preset
from sevenomni.experiments.data_generation.settings import GFN1
from sevenomni.experiments.data_generation.streams import named_rng
from sevenomni.experiments.data_generation.structures import CRYSTALS


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
    chosen = sorted(named_rng(seed, "dbs").choice(n_total, size=n_dbs, replace=False).tolist()) if n_dbs else []
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
