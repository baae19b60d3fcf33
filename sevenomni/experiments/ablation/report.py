"""The three-seed ablation's report: λ chosen on validation, the main table, paired differences.

**Sweeps.** Reads the runner's sweep results (``benchmarks/results/ablation_lambda_<λ>.json``: "Multi, L2 θT";
``ablation_all_lambda_<λ>.json``: "Multi, L2 all"), one file per λ, each with its seeds. For each
mode and λ: the validation criterion (mean force MAE over the validation splits of the training
databases and the DBS, which these arms do not train on; see ``scoring.validation_metrics``) and
the test metrics, mean ± std over seeds. The selected λ minimizes the validation criterion; the
λ the test molecules would have preferred is reported beside it. Writes
``benchmarks/results/ablation_sweeps.{json,md,png}`` (the png: test error against ‖θT‖, every run).

**Main table.** Assembles the seven arms from the runs already made: the four arms without a λ
from ``ablation_unregularized.json``; "Multi, L2 θT" and "Multi+DBS, L2 θT" at the λ selected for
θT-L2 (``ablation_lambda_<λ>.json``, ``ablation_dbs_lambda_<λ>.json``) and "Multi, L2 all" at the λ
selected for L2-all. For each of the method's claims it gives the per-seed difference of the two
arms (same seed: same data split, sampling and initialization) and how many seeds agree with the
claim. Writes ``benchmarks/results/ablation.{json,md,png}``; an arm whose runs are missing is named
as missing, and the rest is still written.

    python benchmarks/ablation_report.py
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import numpy as np

from sevenomni.experiments.ablation.arms import load_arms
from sevenomni.experiments.ablation.summary import aggregate, arm_table, finite_or_none, format_cell
from sevenomni.experiments.ablation.summary import plot as plot_arms
from sevenomni.experiments.checkout import RESULTS, ROOT

MODES = {"task": ("ablation_lambda_", "multi_task", "Multi, L2 θT"), "all": ("ablation_all_lambda_", "multi_all", "Multi, L2 all")}
COLUMNS = [
    ("validation_forces_mae", "validation F (meV/Å)", 1000, 0),
    ("molecule_gfn1.forces_mae", "mol@gfn1 F (meV/Å)", 1000, 0),
    ("crystal_gfn1.forces_mae", "crystal@gfn1 F (meV/Å)", 1000, 0),
    ("molecule_gfn2.forces_mae", "mol@gfn2 F (meV/Å)", 1000, 0),
    ("theta_t_norm", "‖θT‖", 1, 2),
]


def strength(result: dict) -> float:
    for assignment in result.get("extra_overrides", []):
        match = re.fullmatch(r"train\.regularization\.strength=(.+)", assignment)
        if match:
            return float(match.group(1))
    raise ValueError("a sweep result without train.regularization.strength in its extra overrides")


def sweep(results_dir: Path, mode: str, columns: list[tuple] = COLUMNS) -> list[dict]:
    """One point per λ file of ``mode`` (its summary on ``columns`` and its runs), sorted by λ."""
    prefix, arm, _ = MODES[mode]
    points = []
    for path in sorted(results_dir.glob(f"{prefix}*.json")):
        result = json.loads(path.read_text())
        runs = [run for run in result["runs"] if run["arm"] == arm]
        if not runs or any("validation" not in run for run in runs):
            continue
        summary = result["summary"][arm]
        points.append({
            "lambda": strength(result), "file": path.name, "seeds": [run["seed"] for run in runs],
            "summary": {key: summary.get(key) for key, *_ in columns},
            "runs": [{"seed": run["seed"], "theta_t_norm": run["metrics"]["theta_t_norm"],
                      "molecule_gfn1_forces_mae": run["metrics"]["molecule_gfn1"]["forces_mae"],
                      "validation_forces_mae": run["validation"]["selection_forces_mae"]} for run in runs],
        })
    return sorted(points, key=lambda point: point["lambda"])


def best(points: list[dict], key: str) -> float | None:
    scored = [(point["summary"][key]["mean"], point["lambda"]) for point in points if point["summary"].get(key)]
    return min(scored)[1] if scored else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    results_dir = Path(args.results)
    record = sweeps(results_dir)
    main_table(results_dir, record)
    return 0


def sweeps(results_dir: Path) -> dict:
    """Select each mode's λ on validation; write ``ablation_sweeps.{json,md,png}``; return the record."""
    record, lines = {"modes": {}}, ["# λ sweeps of the ablation (selected on validation, never on test)", ""]
    for mode, (_, arm, label) in MODES.items():
        points = sweep(results_dir, mode)
        chosen = best(points, "validation_forces_mae")
        test_choice = best(points, "molecule_gfn1.forces_mae")
        record["modes"][mode] = {"arm": arm, "points": points, "selected_lambda": chosen,
                                 "test_preferred_lambda": test_choice}
        lines += [f"## {label} (`train.regularization.mode: {mode}`)", ""]
        if not points:
            lines += ["No sweep results with validation metrics yet.", ""]
            continue
        lines += ["| λ | seeds | " + " | ".join(title for _, title, _, _ in COLUMNS) + " |",
                  "|---:|---|" + "---:|" * len(COLUMNS)]
        for point in points:
            cells = [format_cell(point["summary"].get(key), scale, decimals) for key, _, scale, decimals in COLUMNS]
            mark = " (selected)" if point["lambda"] == chosen else ""
            lines.append(f"| {point['lambda']:g}{mark} | {len(point['seeds'])} | " + " | ".join(cells) + " |")
        lines += ["", f"Selected on validation: λ = {chosen:g}; the test molecules would have preferred "
                  f"λ = {test_choice:g}.", ""]
    (results_dir / "ablation_sweeps.json").write_text(json.dumps(record, indent=1) + "\n")
    (results_dir / "ablation_sweeps.md").write_text("\n".join(lines) + "\n")
    plot(record, results_dir / "ablation_sweeps.png")
    print("\n".join(lines))
    return record


# ---------------------------------------------------------------------------------- main table
UNREGULARIZED = "ablation_unregularized.json"  # the arms without a λ
REGULARIZED = {"multi_task": ("task", "ablation_lambda_"), "multi_dbs_task": ("task", "ablation_dbs_lambda_"),
               "multi_all": ("all", "ablation_all_lambda_")}
# (claim, arm that should be lower, arm it is compared with): the method paper's three, and whether
# the DBS adds to θT-L2.
CLAIMS = [
    ("θT-L2 < no regularization", "multi_task", "multi_none"),
    ("θT-L2 < L2 on all weights", "multi_task", "multi_all"),
    ("DBS + θT-L2 < DBS alone", "multi_dbs_task", "multi_dbs_none"),
    ("DBS + θT-L2 < θT-L2 alone", "multi_dbs_task", "multi_task"),
]
DIFFERENCE_METRICS = [("molecule_gfn1.forces_mae", "mol@gfn1 F"), ("crystal_gfn1.forces_mae", "crystal@gfn1 F"),
                      ("molecule_gfn2.forces_mae", "mol@gfn2 F")]


def arm_source(results_dir: Path, arm: str, record: dict) -> tuple[Path | None, float | None]:
    """The results file holding ``arm``'s runs (at its mode's selected λ), and that λ."""
    if arm not in REGULARIZED:
        return results_dir / UNREGULARIZED, None
    mode, prefix = REGULARIZED[arm]
    chosen = record["modes"][mode]["selected_lambda"]
    if chosen is None:
        return None, None
    for path in sorted(results_dir.glob(f"{prefix}*.json")):
        if strength(json.loads(path.read_text())) == chosen:
            return path, chosen
    return None, chosen


def metric(run: dict, key: str) -> float | None:
    value = run["metrics"]
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def seed_pairs(runs: list[dict], first: str, second: str) -> tuple[list[int], dict[str, dict[int, dict]]]:
    """The seeds both arms ran, and arm -> seed -> run for the two arms."""
    by_seed = {arm: {run["seed"]: run for run in runs if run["arm"] == arm} for arm in (first, second)}
    return sorted(set(by_seed[first]) & set(by_seed[second])), by_seed


def paired(runs: list[dict], better: str, other: str) -> dict | None:
    """Per-seed differences better − other (meV/Å) and the seeds where ``better`` is lower."""
    seeds, by_seed = seed_pairs(runs, better, other)
    if not seeds:
        return None
    metrics = {}
    for key, _ in DIFFERENCE_METRICS:
        pairs = [(metric(by_seed[better][s], key), metric(by_seed[other][s], key)) for s in seeds]
        if any(a is None or b is None for a, b in pairs):
            continue
        differences = [1000 * (a - b) for a, b in pairs]
        metrics[key] = {"per_seed_meV_per_A": differences, "mean": float(np.mean(differences)),
                        "std": float(np.std(differences, ddof=1)) if len(differences) > 1 else None,
                        "seeds_lower": sum(d < 0 for d in differences), "n": len(differences)}
    return {"seeds": seeds, "metrics": metrics}


def difference_rows(label: str, difference: dict | None) -> list[str]:
    """Markdown rows of one :func:`paired` comparison: per seed, mean ± std, seeds where it is lower."""
    rows = []
    for key, title in DIFFERENCE_METRICS:
        value = (difference or {}).get("metrics", {}).get(key)
        if value is None:
            continue
        spread = f" ± {value['std']:.0f}" if value["std"] is not None else ""
        per_seed = ", ".join(f"{d:+.0f}" for d in value["per_seed_meV_per_A"])
        rows.append(f"| {label} | {title} | {per_seed} | {value['mean']:+.0f}{spread} | {value['seeds_lower']}/{value['n']} |")
    return rows


def main_table(results_dir: Path, record: dict) -> dict:
    """Assemble ``ablation.{json,md,png}`` from the unregularized runs and the selected λ's runs."""
    arms = load_arms()
    runs, used, missing, sources = [], {}, [], {}
    for arm, spec in arms.items():
        path, chosen = arm_source(results_dir, arm, record)
        result = json.loads(path.read_text()) if path is not None and path.exists() else None
        arm_runs = [run for run in (result or {}).get("runs", []) if run["arm"] == arm]
        if not arm_runs:
            missing.append(arm if chosen is None else f"{arm} (λ = {chosen:g})")
            continue
        label = spec["label"] + (f" (λ = {chosen:g})" if chosen is not None else "")
        used[arm] = {"label": label, "lambda": chosen, "source": path.name,
                     "config": os.path.relpath(spec["config"], ROOT), "set": spec["set"]}
        runs += arm_runs
        sources[path.name] = result
    if not runs:
        print("[ablation report] no runs for the main table yet")
        return {}
    first = next(iter(sources.values()))
    for name, result in sources.items():
        for key in ("data", "steps", "transfer_floor"):
            if result[key] != first[key]:
                raise SystemExit(f"{name}: its {key} differs from the other sources' ({result[key]} vs {first[key]})")
    table = {
        "benchmark": first["benchmark"], "data": first["data"], "data_dir": first["data_dir"],
        "data_sets": first["data_sets"], "steps": first["steps"],
        "seeds": sorted({run["seed"] for run in runs}),
        "selected_lambda": {mode: entry["selected_lambda"] for mode, entry in record["modes"].items()},
        "test_preferred_lambda": {mode: entry["test_preferred_lambda"] for mode, entry in record["modes"].items()},
        "arms": used, "missing_arms": missing, "units": first["units"], "transfer_floor": first["transfer_floor"],
        "runs": runs, "summary": aggregate(runs),
        "paired_differences": [
            {"claim": claim, "lower": better, "than": other, **(paired(runs, better, other) or {"seeds": []})}
            for claim, better, other in CLAIMS
        ],
        "train_wall_s_total": sum(run["train_wall_s"] for run in runs),
        "sources": {name: {"finished_utc": r["finished_utc"], "training_span_s": r["training_span_s"],
                           "machine": r["machine"]} for name, r in sources.items()},
    }
    lines = arm_table(table)
    if missing:
        lines += ["", f"Missing (not yet run): {', '.join(missing)}."]
    lines += ["", "## Paired differences (same seed, first arm − second arm; negative: the first arm is lower)", "",
              "| claim | metric | per seed (meV/Å) | mean ± std | seeds where lower |", "|---|---|---|---:|---:|"]
    for entry in table["paired_differences"]:
        lines += difference_rows(entry["claim"], entry)
    machine = first["machine"]
    lines += ["", f"λ selected on validation (never on test): θT-L2 {table['selected_lambda']['task']}, "
              f"L2-all {table['selected_lambda']['all']} (see ablation_sweeps.md). {len(runs)} runs, "
              f"{table['train_wall_s_total'] / 3600:.1f} h of training in all ({machine['threads_per_run']} torch "
              f"thread per run, {machine['cpus_available']}-CPU {machine['processor']} machine, 1–2 runs at a time).", ""]
    (results_dir / "ablation.json").write_text(json.dumps(finite_or_none(table), indent=1) + "\n")
    (results_dir / "ablation.md").write_text("\n".join(lines))
    plot_arms(table, results_dir / "ablation.png")
    print("\n".join(lines))
    return table


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for mode, marker in (("task", "o"), ("all", "s")):
        for point in record["modes"][mode]["points"]:
            x = [run["theta_t_norm"] for run in point["runs"]]
            y = [1000 * run["molecule_gfn1_forces_mae"] for run in point["runs"]]
            axis.scatter(x, y, marker=marker, label=f"{MODES[mode][2]}, λ = {point['lambda']:g}")
    axis.set_xlabel("‖θT‖")
    axis.set_ylabel("mol@gfn1 force MAE, gfn1 channel (meV/Å)")
    axis.set_title("Transfer error against the size of θT (every run)")
    if any(record["modes"][mode]["points"] for mode in MODES):
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
