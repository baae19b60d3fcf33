"""Which structures should a domain-bridging set hold? `disagreement` against `random`, same size.

The ablation's DBS is molecules of the molecule database relabelled with the crystals' method
(GFN1-xTB). This builds it twice with the `sevenomni dbs` tools, from the same pool and of the same
size, and trains the ablation's "Multi+DBS, L2 θT" arm with each:

1. train the ablation's "Multi, L2 θT" arm (no DBS): the model whose channels are compared;
2. `sevenomni dbs select` COUNT molecules of the molecule set (GFN2 labels) where that model's gfn1
   and gfn2 channels disagree most, and COUNT at random;
3. `sevenomni dbs label` both with GFN1-xTB (tblite);
4. train "Multi+DBS, L2 θT" with each DBS (everything else as the ablation) and score the held-out
   sets as the ablation does (benchmarks/ablation.py).

Writes ``benchmarks/results/dbs_selection.{json,md}``. One seed by default; runs are resumable.

    python benchmarks/dbs_selection.py --data tiny --steps 600 --count 10
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from sevenomni.experiments.ablation.summary import format_cell
from sevenomni.experiments.checkout import DATA_ROOT, RESULTS, ROOT

GFN1 = '{"method": "GFN1-xTB", "verbosity": 0, "accuracy": 1.0, "max_iterations": 250, "electronic_temperature": 300.0}'
STRATEGIES = ("disagreement", "random")
METRICS = [
    ("molecule_gfn1.forces_mae", "mol@gfn1 F (meV/Å)", 1000, 0),
    ("molecule_gfn1.conformational_energy_mae", "mol@gfn1 ΔE (meV/atom)", 1, 1),
    ("crystal_gfn1.forces_mae", "crystal@gfn1 F (meV/Å)", 1000, 0),
    ("molecule_gfn2.forces_mae", "mol@gfn2 F (meV/Å)", 1000, 0),
    ("molecule_gfn1_on_gfn2_channel.forces_mae", "gfn2 ch. on mol@gfn1 F (meV/Å)", 1000, 0),
    ("theta_t_norm", "‖θT‖", 1, 2),
]


def run(command: list[str]) -> None:
    print("[dbs-selection] " + " ".join(command), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def ablation(args, arm: str, name: str, work: Path, extra: list[str] = ()) -> dict:
    command = [sys.executable, "benchmarks/ablation.py", "--data", args.data, "--arms", arm, "--seeds",
               *map(str, args.seeds), "--steps", str(args.steps), "--work", str(work), "--name", name,
               "--out", str(work / "results"), "--jobs", str(args.jobs)]
    for assignment in extra:
        command += ["--set", assignment]
    run(command)
    return json.loads((work / "results" / f"{name}.json").read_text())


def paired_differences(results: dict) -> list[float]:
    """Per training seed: mol@gfn1 force MAE with the disagreement DBS minus with the random DBS (eV/Å)."""
    def by_seed(strategy):
        return {run["seed"]: run["metrics"]["molecule_gfn1"]["forces_mae"] for run in results[strategy]["runs"]}

    chosen, random = by_seed("disagreement"), by_seed("random")
    return [chosen[seed] - random[seed] for seed in sorted(chosen) if seed in random]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=["tiny", "small"], default="tiny")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--count", type=int, default=10, help="DBS size (the tiny set's DBS has 10)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="labelling processes")
    parser.add_argument("--work", default=str(ROOT / "runs" / "dbs_selection"))
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    work, started = Path(args.work), time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    data = DATA_ROOT / args.data

    base = ablation(args, "multi_task", "base", work / "base")
    model = ROOT / base["runs"][0]["run_dir"] / "model.pt"
    pool = work / "molecule_gfn2"
    if not pool.exists():
        run([sys.executable, "-m", "sevenomni.cli", "data", "ingest", str(data / "molecule_gfn2.extxyz"),
             "--out", str(pool), "--quiet"])
    results = {}
    for strategy in STRATEGIES:
        selection, store = work / f"{strategy}.json", work / f"dbs_{strategy}"
        if not selection.exists():
            run([sys.executable, "-m", "sevenomni.cli", "dbs", "select", str(pool), "--count", str(args.count),
                 "--strategy", strategy, "--model", str(model), "--seed", str(args.seeds[0]), "--out", str(selection)])
        if not store.exists():
            run([sys.executable, "-m", "sevenomni.cli", "dbs", "label", str(selection), "--calculator",
                 "tblite.ase:TBLite", "--kwargs", GFN1, "--out", str(store), "--workers", str(args.workers)])
        trained = ablation(args, "multi_dbs_task", f"dbs_{strategy}", work / strategy,
                           [f"data.databases.2.path={store}"])
        results[strategy] = {
            "selection": json.loads(selection.read_text()),
            "summary": trained["summary"]["multi_dbs_task"],
            "runs": trained["runs"],
        }
    record = {
        "benchmark": "dbs_selection", "data": args.data, "steps": args.steps, "count": args.count,
        "seeds": args.seeds, "base_model": str(model.relative_to(ROOT)) if model.is_relative_to(ROOT) else str(model),
        "base_summary": base["summary"]["multi_task"], "results": results,
        "machine": f"{platform.platform()} ({platform.processor() or 'cpu'})",
        "total_wall_s": round(time.perf_counter() - started, 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [("Multi, L2 θT (no DBS)", base["summary"]["multi_task"])]
    rows += [(f"Multi+DBS, L2 θT — DBS by {s}", results[s]["summary"]) for s in STRATEGIES]
    lines = [
        f"# DBS selection: disagreement vs random ({args.count} molecules, data `{args.data}`, "
        f"{args.steps} steps, seeds {args.seeds})",
        "",
        "| arm | " + " | ".join(title for _, title, _, _ in METRICS) + " |",
        "|---|" + "---:|" * len(METRICS),
    ]
    for label, summary in rows:
        cells = [format_cell(summary.get(key), scale, decimals) for key, _, scale, decimals in METRICS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    paired = paired_differences(results)
    record["paired_molecule_gfn1_forces_mae_difference"] = paired
    lines += ["", "Mean ± sample std over training seeds (the DBS itself is selected once, with the seed-0 model). "
              "Per seed, disagreement − random on mol@gfn1 force MAE (meV/Å): "
              + ", ".join(f"{1000 * d:+.0f}" for d in paired) + "."]
    trained = sum(run["train_wall_s"] for run in base["runs"])
    trained += sum(run["train_wall_s"] for strategy in STRATEGIES for run in results[strategy]["runs"])
    record["train_wall_s"] = round(trained, 1)
    (out / "dbs_selection.json").write_text(json.dumps(record, indent=1) + "\n")
    lines += ["", f"Training took {trained / 60:.1f} min in all (one run at a time, 1 thread); this invocation "
              f"{record['total_wall_s'] / 60:.1f} min (finished runs are reused), on {record['machine']}."]
    (out / "dbs_selection.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0
