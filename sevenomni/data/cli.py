"""``sevenomni data ingest``, ``sevenomni data info`` and ``sevenomni data verify``."""

from __future__ import annotations

import argparse
import json
import sys

from sevenomni.core.base import DEFAULT_MIN_DISTANCE
from sevenomni.data.format_names import FORMATS


def _ingest(args: argparse.Namespace) -> None:
    from sevenomni.data.ingest import ingest

    report = ingest(
        args.sources, args.out, energy_key=args.energy_key, forces_key=args.forces_key,
        stress_key=args.stress_key, skip_bad=args.skip_bad, workers=args.workers, format=args.format,
        require_energy=not args.allow_missing_energy, min_distance=args.min_distance, overwrite=args.overwrite,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    print(report.summary())
    for example in report.examples[:5]:
        print(f"  e.g. {example}")


def describe(path: str) -> str:
    """Human-readable summary of a store: counts, elements, labels, skipped records."""
    from sevenomni.data.store import StoreReader

    with StoreReader(path) as reader:
        meta, label_sources = reader.metadata, reader.label_sources
    n = meta["count"]
    atoms = meta["num_atoms"]
    lines = [
        f"store:      {path}",
        f"format:     {meta['format']} v{meta['version']}, created {meta.get('created', '?')}",
        f"structures: {n:,}",
        f"atoms:      {atoms['total']:,} (per structure min {atoms['min']}, mean {atoms['mean']:.1f}, max {atoms['max']})",
        f"elements:   {len(meta['elements'])}: " + " ".join(f"{s}:{c:,}" for s, c in meta["elements"].items()),
        "labels:",
    ]
    for label, count in meta["labels"].items():
        where = f"  from {label_sources[label]}" if label in label_sources else ""
        lines.append(f"  {label:<7} {count:>12,} / {n:,} ({100.0 * count / n:.1f} %){where}")
    if meta.get("force_rms") is not None:
        lines.append(f"force RMS:  {meta['force_rms']:.4f} {meta['units']['forces']}")
    lines.append("units:      " + ", ".join(f"{k} {v}" for k, v in meta["units"].items()))
    skipped = meta.get("skipped") or {}
    lines.append(
        f"skipped:    {sum(skipped.values()):,}"
        + (" (" + ", ".join(f"{k} {v:,}" for k, v in sorted(skipped.items())) + ")" if skipped else "")
    )
    sources = meta.get("sources", [])
    lines.append(f"sources:    {len(sources)} file(s)" + (f": {', '.join(sources[:5])}" if sources else "")
                 + (" …" if len(sources) > 5 else ""))
    return "\n".join(lines)


def _info(args: argparse.Namespace) -> None:
    if args.json:
        from sevenomni.data.store import StoreReader

        with StoreReader(args.store) as reader:
            print(json.dumps(reader.metadata, indent=2))
    else:
        print(describe(args.store))


def _verify(args: argparse.Namespace) -> None:
    from sevenomni.data.store import StoreReader

    with StoreReader(args.store) as reader:
        reader.verify()
        print(f"{args.store}: {len(reader):,} records intact; the sidecar arrays and the metadata agree with them")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data ingest``, ``data info`` and ``data verify`` to the top-level command parser."""
    data = subparsers.add_parser("data", help="build and inspect structure stores")
    commands = data.add_subparsers(dest="data_command", required=True)

    ingest = commands.add_parser(
        "ingest", help="read structure files into a store",
        description="Read any ASE-readable file (extxyz, ASE db, OUTCAR, vasprun.xml, …), .aselmdb files or "
        "directories (OMat24/OMol25/OC20), MPtrj JSON and SPICE HDF5 into one LMDB store.",
    )
    ingest.add_argument("sources", nargs="+", metavar="SRC", help="files or .aselmdb directories")
    ingest.add_argument("--out", required=True, metavar="STORE", help="store directory to create")
    ingest.add_argument("--energy-key", default=None, metavar="K",
                        help="energy label key; a record without it is an error (default: REF_energy, else the "
                        "calculator's energy; native for MPtrj/SPICE/aselmdb)")
    ingest.add_argument("--forces-key", default=None, metavar="K",
                        help="forces label key, as strict (default: REF_forces, else the calculator's)")
    ingest.add_argument("--stress-key", default=None, metavar="K",
                        help="stress label key, as strict (default: REF_stress, else the calculator's)")
    ingest.add_argument("--workers", type=int, default=1, metavar="N", help="files read in parallel (default 1)")
    ingest.add_argument("--skip-bad", action="store_true", help="skip invalid records, counting them by reason")
    ingest.add_argument("--format", choices=FORMATS, default="auto", help="source format (default: by file name)")
    ingest.add_argument("--allow-missing-energy", action="store_true", help="keep structures without an energy")
    ingest.add_argument("--min-distance", type=float, default=DEFAULT_MIN_DISTANCE, metavar="Å",
                        help="reject structures with two atoms nearer than this, periodic images included "
                        f"(default {DEFAULT_MIN_DISTANCE}; 0: no check)")
    ingest.add_argument("--overwrite", action="store_true", help="replace STORE if it exists")
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")
    ingest.set_defaults(handler=_ingest)

    info = commands.add_parser("info", help="describe a store: counts, elements, label availability")
    info.add_argument("store")
    info.add_argument("--json", action="store_true", help="print the raw metadata record")
    info.set_defaults(handler=_info)

    verify = commands.add_parser(
        "verify", help="check every record's checksum and values, and the sidecar arrays and metadata against them"
    )
    verify.add_argument("store")
    verify.set_defaults(handler=_verify)
