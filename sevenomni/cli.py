"""The ``sevenomni`` command line."""

from __future__ import annotations

import argparse
import sys

from sevenomni.core.arguments import CommandParser, add_trust_pickle_argument
from sevenomni.core.files import describe_os_error
from sevenomni.core.version import __version__


def info(args: argparse.Namespace) -> None:
    """Print what a checkpoint holds: tasks, elements, cutoff, hyperparameters, parameter counts."""
    from sevenomni.model_io.loading import load_model
    from sevenomni.train.report import parameter_count as count

    model = load_model(args.checkpoint, trust_pickle=args.trust_pickle)
    config = model.config.model_dump()
    print(f"checkpoint: {args.checkpoint}")
    print(f"tasks:      {', '.join(model.tasks)}")
    print(f"elements:   {' '.join(model.elements)} ({len(model.elements)})")
    print(f"cutoff:     {model.cutoff} Å")
    print("trained on (elements per task; predictions for others draw an ExtrapolationWarning):")
    for task in model.tasks:
        elements = model.task_elements(task)
        print(f"  {task}: {' '.join(elements) if elements is not None else 'not recorded (no extrapolation warnings)'}")
    if model.linear_correction is not None:
        factors = model.linear_correction.weight.view(-1).tolist()
        print(f"linear correction: {', '.join(f'{t} {c:.4f}' for t, c in zip(model.tasks, factors))}")
    print("hyperparameters:")
    for key, value in config.items():
        if key not in ("tasks", "elements", "task_elements"):
            print(f"  {key}: {value}")
    print("parameters:")
    print(f"  shared (θC):              {count(model.shared_parameters()):,}")
    print(f"  task-specific:            {count(model.task_parameters()):,}")
    print(f"    of which embeddings θT: {count(model.task_embedding_parameters()):,}")
    print(f"  total:                    {count(model.named_parameters()):,}")


def import_sevenn(args: argparse.Namespace) -> None:
    """Convert a SevenNet checkpoint (file or shipped shortcut) to a sevenomni model file."""
    from sevenomni.model_io.sevenn.convert import import_sevenn as convert

    model = convert(args.checkpoint, args.out, task_name=args.task_name, trust_pickle=args.trust_pickle)
    total = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: tasks {', '.join(model.tasks)}; {len(model.elements)} elements; {total:,} parameters")


def export_sevenn(args: argparse.Namespace) -> None:
    """Write a sevenomni model (imported from SevenNet, perhaps fine-tuned) as a SevenNet checkpoint."""
    from sevenomni.model_io.loading import load_model, resolve_model_source
    from sevenomni.model_io.sevenn.export import export_sevenn as convert

    source = resolve_model_source(args.model)
    model = load_model(source, trust_pickle=args.trust_pickle)
    exported = convert(model, source, args.out, template=args.template, trust_pickle=args.trust_pickle)
    modal_map = exported["config"].get("_modal_map") if exported["config"].get("use_modality") else None
    modals = f"; modalities {', '.join(modal_map)}" if modal_map else ""
    print(f"wrote {args.out}: SevenNet checkpoint{modals}")


def error_message(error: Exception) -> str:
    """What the user is told: an OS error naming its path; an error raised in a DataLoader worker as
    the worker raised it (torch puts the worker's traceback before it)."""
    if isinstance(error, OSError):
        return describe_os_error(error)
    text = str(error)
    if text.startswith("Caught ") and "\nOriginal Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        return last.removeprefix(f"{type(error).__module__}.{type(error).__qualname__}: ")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="sevenomni", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sevenomni {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    info_parser = commands.add_parser("info", help="describe a model checkpoint")
    info_parser.add_argument("checkpoint", help="model file, training checkpoint, run directory or SevenNet checkpoint")
    add_trust_pickle_argument(info_parser)
    info_parser.set_defaults(handler=info)
    sevenn_parser = commands.add_parser(
        "import-sevenn",
        help="convert a SevenNet checkpoint (or 7net-0, 7net-0_22May2024, 7net-l3i5, 7net-mf-0) to a sevenomni model",
    )
    sevenn_parser.add_argument("checkpoint", help="SevenNet checkpoint file, or a shortcut for one shipped with sevenn")
    sevenn_parser.add_argument("--out", required=True, help="sevenomni model file to write")
    sevenn_parser.add_argument("--task-name", help="name of the task of a single-task checkpoint (default: sevenn)")
    add_trust_pickle_argument(sevenn_parser)
    sevenn_parser.set_defaults(handler=import_sevenn)
    export_parser = commands.add_parser(
        "export-sevenn", help="write a model imported from SevenNet (e.g. fine-tuned since) as a SevenNet checkpoint"
    )
    export_parser.add_argument("model", help="model file, training checkpoint, run directory or SevenNet checkpoint")
    export_parser.add_argument("out", help="SevenNet checkpoint file to write (.pth)")
    export_parser.add_argument(
        "--template",
        help="SevenNet checkpoint (or shortcut: 7net-0, 7net-mf-0, ...) whose config the export uses "
        "(default: the one the model was imported from, where its file records it)",
    )
    add_trust_pickle_argument(export_parser)
    export_parser.set_defaults(handler=export_sevenn)
    from sevenomni.data.cli import register as register_data_commands  # `sevenomni data ...`
    register_data_commands(commands)
    from sevenomni.train.cli import register as register_train_command  # `sevenomni train ...`

    register_train_command(commands)
    from sevenomni.analysis.cli import register as register_analysis_commands  # eval, analyze, plot

    register_analysis_commands(commands)
    from sevenomni.bridging.cli import register as register_dbs_commands  # `sevenomni dbs select|label`

    register_dbs_commands(commands)
    from sevenomni.md.cli import register as register_md_commands  # `sevenomni lammps`

    register_md_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except (ValueError, OSError) as error:  # ValueError: also CheckpointError, ConfigError; OSError: permission denied, disk full, read-only, …
        print(f"sevenomni {args.command}: error: {error_message(error)}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        from sevenomni.train.trainer import TrainingDiverged, TrainingInterrupted

        if isinstance(error, TrainingInterrupted):
            print(f"sevenomni {args.command}: {error}", file=sys.stderr)
            return 130
        if isinstance(error, TrainingDiverged):
            print(f"sevenomni {args.command}: error: {error}", file=sys.stderr)
            return 3
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
