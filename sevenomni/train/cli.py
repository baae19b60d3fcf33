"""``sevenomni train CONFIG.yaml [--set key=value ...] [--overwrite]`` and ``sevenomni train --resume RUN_DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path

from sevenomni.core.arguments import add_trust_pickle_argument


def train(args: argparse.Namespace) -> None:
    if args.print_config:
        from sevenomni.train.config_template import config_template

        print(config_template(), end="")
        return
    from sevenomni.core.logs import log_to_console
    from sevenomni.model_io.checkpoint import read_training_state
    from sevenomni.train.config import load_config
    from sevenomni.train.run_directory import resume_checkpoint
    from sevenomni.train.trainer import Trainer

    log_to_console()
    overrides = [*args.set, *([f"train.device={args.device}"] if args.device else [])]
    state = None
    if args.resume:
        state = read_training_state(resume_checkpoint(Path(args.resume)))  # read once, for config and run
        raw = state["config"]
        raw["train"]["run_dir"] = args.resume  # the run continues where its state is, wherever that was first
        config = load_config(raw=raw, overrides=overrides)
    else:
        if args.config is None:
            raise ValueError("give a CONFIG.yaml (or --resume RUN_DIR)")
        config = load_config(args.config, overrides)
    trainer = Trainer(
        config, resume=bool(args.resume), overwrite=args.overwrite, trust_pickle=args.trust_pickle, state=state
    )
    trainer.run()


def register(commands) -> None:
    parser = commands.add_parser("train", help="train a model from a YAML run config")
    parser.add_argument("config", nargs="?", help="run config (YAML); optional with --resume")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    parser.add_argument("--print-config", action="store_true",
                        help="print every config key with its default and description (commented YAML) and exit")
    parser.add_argument("--device", help="where to train: auto, cpu, cuda, cuda:1, … (sets train.device)")
    earlier = parser.add_mutually_exclusive_group()
    earlier.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    earlier.add_argument(
        "--overwrite",
        action="store_true",
        help="start again in a run directory that holds an earlier run: its checkpoints, models, config, "
        "log and metrics are removed first (other files stay)",
    )
    add_trust_pickle_argument(parser)  # for model.init_from
    parser.set_defaults(handler=train)
