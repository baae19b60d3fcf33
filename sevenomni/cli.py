"""The ``sevenomni`` command line."""

from __future__ import annotations

import argparse
import sys

from sevenomni.checkpoint import CheckpointError


def info(args: argparse.Namespace) -> None:
    """Print what a checkpoint holds: tasks, elements, cutoff, hyperparameters, parameter counts."""
    from sevenomni.checkpoint import load_model

    model = load_model(args.checkpoint)
    count = lambda named: sum(p.numel() for _, p in named)  # noqa: E731
    config = model.config.model_dump()
    print(f"checkpoint: {args.checkpoint}")
    print(f"tasks:      {', '.join(model.tasks)}")
    print(f"elements:   {' '.join(model.elements)} ({len(model.elements)})")
    print(f"cutoff:     {model.cutoff} Å")
    print("hyperparameters:")
    for key, value in config.items():
        if key not in ("tasks", "elements"):
            print(f"  {key}: {value}")
    print("parameters:")
    print(f"  shared (θC):              {count(model.shared_parameters()):,}")
    print(f"  task-specific:            {count(model.task_parameters()):,}")
    print(f"    of which embeddings θT: {count(model.task_embedding_parameters()):,}")
    print(f"  total:                    {count(model.named_parameters()):,}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sevenomni", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    info_parser = commands.add_parser("info", help="describe a model checkpoint")
    info_parser.add_argument("checkpoint")
    info_parser.set_defaults(handler=info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except (CheckpointError, ValueError, FileNotFoundError) as error:
        print(f"sevenomni {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
