"""``sevenomni eval``, ``sevenomni predict``, ``sevenomni analyze embeddings|gap`` and ``sevenomni plot``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sevenomni.core.arguments import add_trust_pickle_argument


def _progress(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


def evaluate(args: argparse.Namespace) -> None:
    """Score MODEL on every DATA source and channel; write metrics.json and the figures."""
    import torch

    from sevenomni.analysis import plots
    from sevenomni.analysis.config_types import format_config_type_table
    from sevenomni.analysis.evaluate import (
        choose_channels,
        evaluate_databases,
        format_table,
        open_sources,
        parse_own,
    )
    from sevenomni.analysis.json_output import write_json
    from sevenomni.model_io.loading import load_model

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, trust_pickle=args.trust_pickle)
    databases = open_sources(
        args.data, model, args.cache_dir, parse_own(args.own, model.tasks), energy_key=args.energy_key,
        forces_key=args.forces_key, stress_key=args.stress_key, skip_bad=args.skip_bad, progress=_progress(args),
    )
    for database in databases:
        choose_channels(database, model, args.task)
    out = Path(args.out)
    evaluation = evaluate_databases(
        model, databases, batch_size=args.batch_size, workers=args.workers, device=args.device,
        predictions_dir=out / "predictions" if args.predictions else None, prefix=args.name,
        progress=_progress(args), by_config_type=True,
    )
    print(format_table(evaluation.rows))
    if evaluation.config_type_rows:
        print(format_config_type_table(evaluation.config_type_rows))
    for database in databases:
        for note in database.skipped:
            print(f"{database.name}: skipped {note}")
    rate = evaluation.structures / evaluation.seconds if evaluation.seconds > 0 else float("nan")
    print(f"{evaluation.structures} structures in {evaluation.seconds:.1f} s ({rate:.0f} structures/s); "
          "* = own channel")
    written = [write_json(out / "metrics.json", {
        "model": str(args.model),
        "tasks": model.tasks.as_list(),
        "task": args.task,
        "databases": [
            {"name": d.name, "path": d.path, "structures": len(d.valid), "own": d.own,
             "channels": [c.name for c in d.channels], "skipped": d.skipped}
            for d in databases
        ],
        "units": {"energy_mae": "meV/atom", "energy_rmse": "meV/atom", "energy_cmae": "meV/atom",
                  "forces_mae": "eV/Å", "forces_rmse": "eV/Å", "stress_mae": "eV/Å³", "softening_scale": "1"},
        "results": evaluation.rows,
        **({"config_types": evaluation.config_type_rows} if evaluation.config_type_rows else {}),
        "seconds": evaluation.seconds,
        "structures_per_second": rate,
    })]
    tasks = model.tasks.as_list()
    matrix = plots.transfer_matrix_figure(evaluation.rows, title=str(args.model), tasks=tasks)
    written.append(plots.save_figure(matrix, out / "transfer_matrix.png"))
    for name, (channel, samples) in evaluation.samples.items():
        row = next(r for r in evaluation.rows if r["database"] == name and r["channel"] == channel)
        parity = plots.parity_figure(name, channel, samples, row, tasks=tasks)
        written.append(plots.save_figure(parity, out / f"parity_{name}.png"))
    if args.predictions:
        written += [out / "predictions" / f"{d.name}.extxyz" for d in databases]
    print("wrote " + ", ".join(str(path) for path in written))


def predict(args: argparse.Namespace) -> None:
    """Write FILE's structures with the model's energies, forces and stresses (no labels needed)."""
    from sevenomni.analysis.predict_file import predict_file
    from sevenomni.model_io.loading import load_model

    model = load_model(args.model, trust_pickle=args.trust_pickle)
    count = predict_file(model, args.file, args.out, args.task, args.shift_task, args.batch_size, args.device)
    print(f"wrote {args.out}: {count} structures")


def embeddings(args: argparse.Namespace) -> None:
    """Print θT norms and cosines per site; write embeddings.json and embeddings.png."""
    from sevenomni.analysis import plots
    from sevenomni.analysis.embeddings import analyse_embeddings, format_embeddings
    from sevenomni.analysis.json_output import write_json
    from sevenomni.model_io.loading import load_model

    model = load_model(args.model, trust_pickle=args.trust_pickle)
    analysis = analyse_embeddings(model)
    print(format_embeddings(analysis))
    out = Path(args.out)
    json_path = write_json(out / "embeddings.json", {"model": str(args.model), **analysis})
    figure = plots.embedding_figure(analysis, title=f"task embeddings θT of {args.model}")
    png_path = plots.save_figure(figure, out / "embeddings.png")
    print(f"wrote {json_path}, {png_path}")


def gap(args: argparse.Namespace) -> None:
    """Print and write (gap.json) the force gap between two channels, part by part."""
    from ase.io import read

    from sevenomni.analysis.channel_gap import channel_gap, format_channel_gap
    from sevenomni.analysis.json_output import write_json
    from sevenomni.core.devices import resolve_device
    from sevenomni.model_io.loading import load_model

    device = resolve_device(args.device)
    model = load_model(args.model, trust_pickle=args.trust_pickle).to(device)
    structures = [atoms for path in args.data for atoms in read(path, index=":")]
    result = channel_gap(model, structures, *args.tasks, device=device)
    print(format_channel_gap(result))
    print(f"wrote {write_json(Path(args.out) / 'gap.json', {'model': str(args.model), 'data': args.data, **result})}")


def plot(args: argparse.Namespace) -> None:
    from sevenomni.analysis.plots import write_run_plot

    print(f"wrote {write_run_plot(args.run_dir, args.out)}")


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``eval``, ``predict``, ``analyze embeddings|gap`` and ``plot`` to the top-level command parser."""
    parser = commands.add_parser(
        "eval", help="score a model on labelled data, per database and channel",
        description="Energy, force and stress errors, cMAE and the softening scale of MODEL on every DATA "
        "source and channel; writes metrics.json, transfer_matrix.png and a parity plot per database.",
    )
    parser.add_argument("model", help="model file, training checkpoint, run directory or SevenNet shortcut")
    parser.add_argument("data", nargs="+", metavar="DATA", help="labelled structure files (any format "
                        "`sevenomni data ingest` reads) or stores")
    parser.add_argument("--task", default="all", metavar="NAME|all|common",
                        help="channel(s) to score: a task, 'common', or 'all' (every task and common; default)")
    parser.add_argument("--own", action="append", default=[], metavar="DATABASE=TASK",
                        help="a database's own task (default: the task named in its file name)")
    parser.add_argument("--out", default="eval", metavar="DIR", help="output directory (default: eval)")
    parser.add_argument("--predictions", action="store_true",
                        help="also write DIR/predictions/<database>.extxyz with NAME_<channel>_energy/forces/stress")
    parser.add_argument("--name", default="sevenomni", help="key prefix of the predictions (default: sevenomni)")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N", help="structures per batch (default 32)")
    parser.add_argument("--workers", type=int, default=2, metavar="N",
                        help="DataLoader workers building graphs (default 2; 0 = in this process)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, …")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch CPU threads (default: torch's; 1 is often fastest on a busy CPU)")
    parser.add_argument("--cache-dir", default="runs/cache", metavar="DIR",
                        help="where raw files are ingested to stores, once (default: runs/cache)")
    parser.add_argument("--energy-key", metavar="K", help="energy label key (as in `data ingest`)")
    parser.add_argument("--forces-key", metavar="K", help="forces label key")
    parser.add_argument("--stress-key", metavar="K", help="stress label key")
    parser.add_argument("--skip-bad", action="store_true", help="skip invalid records instead of stopping")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_trust_pickle_argument(parser)
    parser.set_defaults(handler=evaluate)

    parser = commands.add_parser(
        "predict", help="energies, forces and stresses of unlabelled structures, written to extxyz",
        description="Predict every structure of FILE (any file ASE reads, or a store) on one channel, or on all, "
        "batch by batch. Writes OUT (extxyz) with sevenomni_energy, sevenomni_forces and, for periodic cells, "
        "sevenomni_stress; with --task all, one set per channel: sevenomni_<channel>_energy, … (as eval --predictions).",
    )
    parser.add_argument("model", help="model file, training checkpoint, run directory or SevenNet shortcut")
    parser.add_argument("file", metavar="FILE", help="structures: any file ASE reads, or a sevenomni store")
    parser.add_argument("--task", required=True, metavar="NAME|common|all",
                        help="the channel: a task, 'common' (the common PES), or 'all' (every task, and common "
                        "when its shifts are known)")
    parser.add_argument("--shift-task", metavar="NAME", help="the task whose energy shifts the common channel takes "
                        "(needed with several tasks)")
    parser.add_argument("-o", "--out", required=True, metavar="OUT.extxyz", help="extxyz file to write")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N", help="structures per batch (default 32)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, …")
    add_trust_pickle_argument(parser)
    parser.set_defaults(handler=predict)

    analyze = commands.add_parser("analyze", help="look inside a model")
    analyze_commands = analyze.add_subparsers(dest="analyze_command", required=True)
    parser = analyze_commands.add_parser(
        "embeddings", help="task embeddings θT per site: norms, cosine similarities, PCA map",
    )
    parser.add_argument("model", help="model file, training checkpoint, run directory or SevenNet shortcut")
    parser.add_argument("--out", default="embeddings", metavar="DIR", help="output directory (default: embeddings)")
    add_trust_pickle_argument(parser)
    parser.set_defaults(handler=embeddings)

    parser = analyze_commands.add_parser(
        "gap", help="the force gap between two channels on the same structures, by task-specific part",
    )
    parser.add_argument("model", help="model file, training checkpoint, run directory or SevenNet shortcut")
    parser.add_argument("data", nargs="+", metavar="DATA", help="structure files (any format ASE reads)")
    parser.add_argument("--tasks", nargs=2, required=True, metavar=("A", "B"),
                        help="the two channels: task A, and a task or 'common' (the common PES with A's energy scale)")
    parser.add_argument("--out", default="gap", metavar="DIR", help="output directory (default: gap)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, auto …")
    add_trust_pickle_argument(parser)
    parser.set_defaults(handler=gap)

    parser = commands.add_parser("plot", help="training curves of a run directory (PNG)")
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--out", metavar="PNG", help="output file (default: RUN_DIR/training.png)")
    parser.set_defaults(handler=plot)
