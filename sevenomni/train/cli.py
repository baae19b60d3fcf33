"""``sevenomni train CONFIG.yaml [--set key=value ...] [--resume RUN_DIR]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sevenomni.loading import add_trust_pickle_argument


def train(args: argparse.Namespace) -> None:
    from sevenomni.train.config import load_config
    from sevenomni.train.trainer import Trainer

    if args.resume:
        from sevenomni.checkpoint import read_training_state

        state_path = Path(args.resume) / "checkpoints" / "last.pt"
        if not state_path.is_file():
            raise FileNotFoundError(f"cannot resume: {state_path} does not exist")
        saved = read_training_state(state_path)["config"]
        config = load_config(raw=saved, overrides=args.set)
    else:
        if args.config is None:
            raise ValueError("give a CONFIG.yaml (or --resume RUN_DIR)")
        config = load_config(args.config, args.set)
    trainer = Trainer(config, resume=bool(args.resume), trust_pickle=args.trust_pickle)
    trainer.run()
    if trainer.ctx.is_main:
        print_final_metrics(trainer.final_metrics, Path(config.train.run_dir))
        from sevenomni.analysis.cli import write_run_plot

        print(f"training curves: {write_run_plot(config.train.run_dir)}")


def print_final_metrics(rows: list[dict], run_dir: Path) -> None:
    print(f"\nfinal validation ({run_dir / 'model.pt'}):", file=sys.stdout)
    print(f"{'database':<24}{'channel':<16}{'E MAE meV/at':>14}{'F MAE eV/Å':>12}{'F RMSE eV/Å':>13}{'σ MAE eV/Å³':>13}")
    for row in rows:
        print(
            f"{row['database']:<24}{row['channel']:<16}{row['energy_mae']:>14.2f}"
            f"{row['forces_mae']:>12.4f}{row['forces_rmse']:>13.4f}{row['stress_mae']:>13.5f}"
        )


def register(commands) -> None:
    parser = commands.add_parser("train", help="train a model from a YAML run config")
    parser.add_argument("config", nargs="?", help="run config (YAML); optional with --resume")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    add_trust_pickle_argument(parser)  # for model.init_from
    parser.set_defaults(handler=train)
