"""The generator's command line (``scripts/make_multifidelity_data.py``, or
``python -m sevenomni.experiments.data_generation.cli``): a preset, a make-up and options in,
``generate`` run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sevenomni.experiments import data_generation
from sevenomni.experiments.data_generation.driver import generate
from sevenomni.experiments.data_generation.presets import MAKEUPS, PRESETS, contrast
from sevenomni.experiments.data_generation.settings import DEFAULT_FORCE_FILTER
from sevenomni.experiments.data_generation.threads import limit_threads


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=data_generation.__doc__.split("\n")[0],
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
