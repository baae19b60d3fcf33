"""Selective-regularization ablation (the 7net-Omni paper's Fig. 1d) at laptop scale, with xTB labels.

    python benchmarks/ablation.py --seeds 0 1 2                 # the real ablation (small set; hours)
    python benchmarks/ablation.py --data tiny --seeds 0 --steps 300   # a quick check on the committed tiny set

Arms (recipes/ablation/arms.yaml): single-task on D1 (crystals@GFN1), single+DBS, and multi-task on
D1 + D2 (molecules@GFN2) without regularization, with L2 on every weight, with L2 on θT only, and
with a domain-bridging set (molecules@GFN1) without regularization and with L2 on θT. Every arm is
a `sevenomni train` run of recipes/ablation/{base,single_task}.yaml plus `--set` overrides; every
arm × seed is trained in a subprocess, then its exported model is evaluated here with
`sevenomni.predict` on the held-out test sets:

* molecule@gfn1 (the transfer target, out of domain for D1) on the gfn1 channel: force MAE and
  conformational-energy MAE (each molecule's mean error removed, meV/atom: the two methods'
  absolute energy references differ);
* crystal@gfn1 on the gfn1 channel (force, energy per atom, stress);
* molecule@gfn2 on the gfn2 channel (multi-task arms only);
* molecule@gfn1 on the gfn2 channel (what the model would give without transfer) and on the common
  PES (θT = 0, gfn1 shifts);
* the channel spread on molecule@gfn1 (as ``sevenomni eval`` reports it) of the gfn1 channel to the
  gfn2 channel and to the common PES: how far apart the channels are in function space;
* ‖θT‖ of the exported model;
* the gfn1 − gfn2 force gap on molecule@gfn1 part by part (``sevenomni analyze gap``: each θT site,
  the per-task scale, swapped from gfn2 into gfn1 one at a time), to see what keeps the channels
  apart and how that varies by seed and λ.

The reference line of the plot is the transfer floor: the GFN1-vs-GFN2 force difference on the test
molecules (what a perfect copy of GFN2 would score against GFN1 labels).

Runs live under ``--work/<data>/<arm>/seed<S>``; a finished run (its model.pt exists) is not
trained again, an interrupted one continues with ``sevenomni train --resume``. Writes
``<out>/<name>.json`` (per run and mean ± std over seeds, wall times, machine), ``<name>.md`` (table)
and ``<name>.png`` (bar plot); ``<name>`` is ``ablation`` for the small set, ``ablation_<data>`` else.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from sevenomni.experiments.ablation.arms import DATA_SETS, ensure_data, load_arms, read_test_sets
from sevenomni.experiments.ablation.scoring import evaluate_model, torch_threads, transfer_floor, validation_metrics
from sevenomni.experiments.ablation.summary import aggregate, finite_or_none, markdown_table, plot
from sevenomni.experiments.ablation.training import train_all, training_span_s, utc_now
from sevenomni.experiments.checkout import RESULTS, ROOT, shown
from sevenomni.experiments.machine import machine_info


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--data", choices=DATA_SETS, default="small")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default: the configs')")
    parser.add_argument("--arms", nargs="+", default=None, help="arm names of recipes/ablation/arms.yaml (default all)")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--name", default=None, help="output file stem (default ablation, or ablation_<data>)")
    parser.add_argument("--work", default=str(ROOT / "runs" / "ablation"), help="where the runs are trained")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra `sevenomni train --set` override for every arm")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per training run (1 is fastest for these small models on a busy CPU)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs trained at once (each with --threads threads); e.g. 2 on a 2-core CPU")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="data generation workers")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.jobs < 1 or args.threads < 1:
        raise SystemExit(f"--jobs and --threads must be >= 1 (got {args.jobs}, {args.threads})")
    started = time.perf_counter()
    all_arms = load_arms()
    names = args.arms or list(all_arms)
    unknown = [n for n in names if n not in all_arms]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; known: {list(all_arms)}")
    arms = {name: all_arms[name] for name in names}
    data_dir = ensure_data(args.data, args.workers)
    sets = read_test_sets(data_dir)
    work = Path(args.work).resolve()
    jobs = [(seed, name) for seed in args.seeds for name in arms]
    run_dirs = {job: work / args.data / job[1] / f"seed{job[0]}" for job in jobs}
    records = train_all(jobs, arms, run_dirs, args, work / "cache")
    runs = []
    for seed, name in jobs:
        run_dir, record = run_dirs[seed, name], records[seed, name]
        with torch_threads(args.threads):
            metrics = evaluate_model(run_dir / "model.pt", sets)
        runs.append({
            "arm": name,
            "seed": seed,
            "run_dir": shown(run_dir),
            "command": record["command"],
            "train_wall_s": sum(a["wall_s"] for a in record["attempts"]),
            "attempts": record["attempts"],
            "metrics": metrics,
            "validation": validation_metrics(run_dir),
            "scale_per_task": yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["scale_per_task"],
        })
        print(f"[ablation] {name} seed {seed}: molecule@gfn1 force MAE "
              f"{metrics['molecule_gfn1']['forces_mae']:.4f} eV/Å, ‖θT‖ {metrics['theta_t_norm']:.3f}")
    steps = args.steps
    if steps is None:
        steps = yaml.safe_load(Path(next(iter(arms.values()))["config"]).read_text())["stages"][0]["steps"]
    manifest = json.loads((data_dir / "manifest.json").read_text())
    result = {
        "benchmark": "selective-regularization ablation (the 7net-Omni paper's Fig. 1d), xTB labels",
        "data": args.data,
        "data_dir": os.path.relpath(data_dir, ROOT),
        "data_sets": {k: v.get("count") for k, v in manifest.get("sets", {}).items()},
        "steps": steps,
        "seeds": list(args.seeds),
        "extra_overrides": list(args.set),
        "arms": {name: {"label": arm["label"], "config": os.path.relpath(arm["config"], ROOT), "set": arm["set"]}
                 for name, arm in arms.items()},
        "units": {"forces_mae": "eV/Å", "forces_rmse": "eV/Å", "energy_mae": "meV/atom",
                  "conformational_energy_mae": "meV/atom", "stress_mae": "eV/Å³", "train_wall_s": "s"},
        "transfer_floor": transfer_floor(sets),
        "manifest_transfer_floor": manifest.get("transfer_floor"),
        "runs": runs,
        "summary": aggregate(runs),
        "machine": machine_info(threads_per_run=args.threads, concurrent_runs=args.jobs),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "finished_utc": utc_now(),
        "training_span_s": training_span_s(runs),
    }
    result["total_wall_s"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.name or ("ablation" if args.data == "small" else f"ablation_{args.data}")
    (out / f"{stem}.json").write_text(json.dumps(finite_or_none(result), indent=2, allow_nan=False) + "\n")
    (out / f"{stem}.md").write_text(markdown_table(result))
    plot(result, out / f"{stem}.png")
    print(markdown_table(result))
    print(f"[ablation] wrote {out / stem}.json, .md, .png")
    return result
