"""``sevenomni dbs select`` and ``sevenomni dbs label`` (:mod:`sevenomni.bridging.select`): the parser imports
nothing heavy; each handler imports the implementation."""

from __future__ import annotations

import json
import sys

from sevenomni.core.arguments import SELECTION_STRATEGIES, add_trust_pickle_argument


def _select_command(args) -> None:
    from sevenomni.bridging.select import select, write_selection
    from sevenomni.model_io.loading import load_model

    model = load_model(args.model, trust_pickle=args.trust_pickle) if args.model else None
    channels = tuple(args.channels) if args.channels else None
    record = select(args.store, args.fraction, args.strategy, model, channels, args.seed, args.device, args.count)
    write_selection(record, args.out)
    scored = f", scores {record['scores'][0]:.4g} to {record['scores'][-1]:.4g}" if "scores" in record else ""
    print(f"selected {len(record['indices'])} of {record['size']} structures ({args.strategy}{scored}) -> {args.out}")


def _label_command(args) -> None:
    from sevenomni.bridging.label import label
    from sevenomni.bridging.select import SelectionError

    try:
        kwargs = json.loads(args.kwargs) if args.kwargs else {}
    except json.JSONDecodeError as error:
        raise SelectionError(f"--kwargs is not JSON: {error}") from None
    if not isinstance(kwargs, dict):
        raise SelectionError("--kwargs must be a JSON object of keyword arguments")
    report = label(args.selection, args.calculator, args.out, kwargs, workers=args.workers,
                   progress=sys.stderr.isatty())
    print(report.summary())


def register(commands) -> None:
    """``sevenomni dbs select`` and ``sevenomni dbs label``."""
    dbs = commands.add_parser("dbs", help="domain-bridging sets: choose structures to relabel, and relabel them")
    actions = dbs.add_subparsers(dest="action", required=True)
    chooser = actions.add_parser("select", help="choose a fraction of a store's structures to relabel")
    chooser.add_argument("store", help="a sevenomni store (e.g. a cached ingest, or `sevenomni data ingest` output)")
    size = chooser.add_mutually_exclusive_group(required=True)
    size.add_argument("--fraction", type=float, help="share of the store to select, in (0, 1]")
    size.add_argument("--count", type=int, help="number of structures to select")
    chooser.add_argument("--strategy", choices=SELECTION_STRATEGIES, default="random",
                         help="random; fps: farthest points of the model's invariant features; disagreement: "
                              "largest force difference between two channels of the model")
    chooser.add_argument("--model", help="model for fps and disagreement (any source load_model takes)")
    chooser.add_argument("--channels", nargs=2, metavar=("A", "B"),
                         help="the two channels compared by disagreement: tasks or 'common' (the common PES, with the other "
                         "channel's energy scale; default: the model's first two tasks)")
    chooser.add_argument("--seed", type=int, default=0)
    chooser.add_argument("--device", default="auto")
    chooser.add_argument("--out", required=True, help="selection file to write (JSON)")
    add_trust_pickle_argument(chooser)
    chooser.set_defaults(handler=_select_command)
    labeller = actions.add_parser("label", help="label a selection with an ASE calculator into a new store")
    labeller.add_argument("selection", help="selection file of `sevenomni dbs select`")
    labeller.add_argument("--calculator", required=True, help="ASE calculator as module:Class, e.g. tblite.ase:TBLite")
    labeller.add_argument("--kwargs", help='keyword arguments as JSON, e.g. \'{"method": "GFN1-xTB"}\'')
    labeller.add_argument("--out", required=True, help="store to write (resumes OUT.partial/ if interrupted)")
    labeller.add_argument("--workers", type=int, default=1, help="processes labelling chunks at once")
    labeller.set_defaults(handler=_label_command)
