"""The transfer-gap remedies (issue 16) beside selective θT-L2 at the selected λ, three seeds each.

Each remedy is the ablation's "Multi, L2 θT" arm (or "Multi+DBS, L2 θT") at the λ the sweeps selected,
plus one `--set` override, trained with the same runner, data, steps and seeds:

    python benchmarks/ablation.py --arms multi_task --seeds 0 1 2 --set train.regularization.strength=1 \\
        --set model.task_embedding_norm=true --name transfer_gap_norm_lambda_1 --work runs/transfer_gap/norm_lambda_1

and with the DBS ``--arms multi_dbs_task --name transfer_gap_norm_dbs_lambda_1``; each remedy's override is
in ``REMEDIES`` below.

This script reads those results (``benchmarks/results/transfer_gap_<remedy>[_dbs]_lambda_<λ>.json``) and
the references (``ablation_lambda_<λ>.json``, ``ablation_dbs_lambda_<λ>.json``) and writes
``benchmarks/results/transfer_gap.{json,md,png}``: per arm mean ± std over seeds of the transfer target
(molecule@gfn1 on the gfn1 channel), the gfn2 channel and the common PES on the same labels, the
in-domain errors, the channel spread on molecule@gfn1, ‖θT‖ and the training time; and per remedy the
per-seed differences from its reference with the number of seeds where the remedy is lower. A remedy
or reference whose results are missing is named as missing. It also tabulates the same quantities against
λ over the θT-L2 sweep (``ablation_lambda_<λ>.json``; λ = 0 is the unpenalized "Multi" arm of
``ablation_unregularized.json``): the gap in function space, not only in ‖θT‖.

    python benchmarks/transfer_gap_report.py [--lambda 1]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sevenomni.experiments.ablation import report
from sevenomni.experiments.ablation.summary import aggregate, finite_or_none, format_cell
from sevenomni.experiments.checkout import RESULTS

# (key, label, the `--set` override that makes it)
REMEDIES = [
    ("fs1", "function-space penalty, λ_f = 1", "train.regularization.function_space=1.0"),
    ("norm", "RMS norm after adding θT", "model.task_embedding_norm=true"),
    ("readout", "θT at the readout only", "model.task_embedding_sites=[readout]"),
    ("si1", "θT at SI-1 only", "model.task_embedding_sites=[si1]"),
    ("shared_scale", "one energy scale for all tasks", "model.scale_per_task=false"),
]
COLUMNS = [
    ("molecule_gfn1.forces_mae", "mol@gfn1 F, gfn1 ch.", 1000, 0),
    ("molecule_gfn1_on_gfn2_channel.forces_mae", "gfn2 ch. on mol@gfn1", 1000, 0),
    ("molecule_gfn1_on_common.forces_mae", "common on mol@gfn1", 1000, 0),
    ("crystal_gfn1.forces_mae", "crystal@gfn1 F", 1000, 0),
    ("molecule_gfn2.forces_mae", "mol@gfn2 F", 1000, 0),
    ("molecule_gfn1_spread_to_gfn2.channel_spread_forces", "spread gfn1↔gfn2", 1000, 0),
    ("molecule_gfn1_spread_to_common.channel_spread_forces", "spread gfn1↔common", 1000, 0),
    ("theta_t_norm", "‖θT‖", 1, 2),
    ("train_wall_s", "train time (s)", 1, 0),
]


def arms(strength: str) -> list[dict]:
    """Every arm of the report: the two references, then each remedy without and with the DBS."""
    suffix = f"lambda_{strength}"
    listed = [
        {"key": "reference", "label": f"θT-L2, λ = {strength}", "file": f"ablation_{suffix}.json",
         "arm": "multi_task", "reference": None},
        {"key": "dbs_reference", "label": f"DBS + θT-L2, λ = {strength}", "file": f"ablation_dbs_{suffix}.json",
         "arm": "multi_dbs_task", "reference": None},
    ]
    for key, label, override in REMEDIES:
        listed.append({"key": key, "label": f"+ {label}", "file": f"transfer_gap_{key}_{suffix}.json",
                       "arm": "multi_task", "reference": "reference", "set": override})
        listed.append({"key": f"{key}_dbs", "label": f"DBS + {label}", "file": f"transfer_gap_{key}_dbs_{suffix}.json",
                       "arm": "multi_dbs_task", "reference": "dbs_reference", "set": override})
    return listed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--lambda", dest="strength", default="1",
                        help="the θT-L2 λ of the arms, spelt as in the result file names (1, 1e-1, ...)")
    args = parser.parse_args(argv)
    results_dir = Path(args.results)
    found, missing, runs = {}, [], []
    for entry in arms(args.strength):
        path = results_dir / entry["file"]
        result = json.loads(path.read_text()) if path.exists() else {}
        entry_runs = [dict(run, arm=entry["key"]) for run in result.get("runs", []) if run["arm"] == entry["arm"]]
        if not entry_runs:
            missing.append(entry["label"])
            continue
        if "set" in entry and entry["set"] not in result.get("extra_overrides", []):
            raise SystemExit(f"{path.name}: expected the override {entry['set']!r}, got {result.get('extra_overrides')}")
        found[entry["key"]] = {**entry, "result": result}
        runs += entry_runs
    if not runs:
        print("[transfer gap] no results yet")
        return 0
    summary = aggregate(runs)
    against_lambda = gap_against_lambda(results_dir)
    paired = {
        key: report.paired(runs, key, entry["reference"])
        for key, entry in found.items()
        if entry["reference"] in found
    }
    table = {
        "benchmark": "transfer-gap remedies (issue 16) against selective θT-L2 at the selected λ",
        "lambda": float(args.strength),
        "arms": {key: {k: v for k, v in entry.items() if k != "result"} for key, entry in found.items()},
        "missing": missing,
        "transfer_floor": next(iter(found.values()))["result"]["transfer_floor"],
        "runs": runs,
        "summary": summary,
        "paired_differences": paired,
        "gap_against_lambda": against_lambda,
    }
    lines = markdown(table)
    (results_dir / "transfer_gap.json").write_text(json.dumps(finite_or_none(table), indent=1) + "\n")
    (results_dir / "transfer_gap.md").write_text("\n".join(lines) + "\n")
    plot(table, results_dir / "transfer_gap.png")
    print("\n".join(lines))
    return 0


def gap_against_lambda(results_dir: Path) -> list[dict]:
    """The report's columns for θT-L2 without a remedy at every λ of the sweep, λ = 0 included."""
    mode = "task"
    points = [dict(point, arm=report.MODES[mode][1]) for point in report.sweep(results_dir, mode, COLUMNS)]
    unpenalized = results_dir / report.UNREGULARIZED
    summary = json.loads(unpenalized.read_text())["summary"].get("multi_none") if unpenalized.exists() else None
    if summary:
        points.insert(0, {"lambda": 0.0, "file": unpenalized.name, "arm": "multi_none",
                          "summary": {column: summary.get(column) for column, *_ in COLUMNS}})
    return points


def markdown(table: dict) -> list[str]:
    floor = 1000 * table["transfer_floor"]["forces_mae"]
    lines = [
        f"# Transfer-gap remedies against θT-L2 at λ = {table['lambda']:g} (small set, 3000 steps)",
        "",
        "Force MAE and channel spread in meV/Å, mean ± sample std over seeds. 'spread' is the mean over the "
        "GFN1 test molecules of the RMS force difference between the gfn1 channel and the gfn2 channel or the "
        f"common PES (as `sevenomni eval` reports it). Transfer floor (GFN2 against GFN1 labels): {floor:.0f}.",
        "",
        "| arm | seeds | " + " | ".join(title for _, title, _, _ in COLUMNS) + " |",
        "|---|---|" + "---:|" * len(COLUMNS),
    ]
    for key, entry in table["arms"].items():
        n = table["summary"][key]["molecule_gfn1.forces_mae"]["n"]
        cells = [format_cell(table["summary"][key].get(column), scale, decimals) for column, _, scale, decimals in COLUMNS]
        lines.append(f"| {entry['label']} | {n} | " + " | ".join(cells) + " |")
    if table["missing"]:
        lines += ["", f"Not yet run: {'; '.join(table['missing'])}."]
    lines += ["", "## Each remedy minus its reference, seed by seed (negative: the remedy is lower)", "",
              "| remedy | metric | per seed | mean ± std | seeds lower |", "|---|---|---|---:|---:|"]
    for key, difference in table["paired_differences"].items():
        lines += report.difference_rows(table["arms"][key]["label"], difference)
    if table["gap_against_lambda"]:
        lines += ["", "## The gap against λ: θT-L2 without a remedy (λ = 0: the unpenalized multi-task arm)", "",
                  "| λ | seeds | " + " | ".join(title for _, title, _, _ in COLUMNS) + " |",
                  "|---:|---|" + "---:|" * len(COLUMNS)]
        for point in table["gap_against_lambda"]:
            n = (point["summary"]["molecule_gfn1.forces_mae"] or {}).get("n", 0)
            cells = [format_cell(point["summary"][column], scale, decimals) for column, _, scale, decimals in COLUMNS]
            lines.append(f"| {point['lambda']:g} | {n} | " + " | ".join(cells) + " |")
    return lines


def plot(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(table["arms"])
    x = np.arange(len(keys))

    def series(metric):
        entries = [table["summary"][key].get(metric) for key in keys]
        return (np.array([1000 * e["mean"] if e else np.nan for e in entries]),
                np.array([1000 * e["std"] if e and e["std"] is not None else 0.0 for e in entries]))

    points = table["gap_against_lambda"]
    figure, axes = plt.subplots(1, 2 if points else 1, figsize=(max(7.0, 0.9 * len(keys) + 3) + (6.0 if points else 0), 5.0),
                                squeeze=False)
    axis = axes[0, 0]
    means, stds = series("molecule_gfn1.forces_mae")
    axis.bar(x, means, 0.6, yerr=stds, capsize=3, color="tab:blue", label="mol@gfn1, gfn1 channel")
    for metric, style, label in (("molecule_gfn1_on_gfn2_channel.forces_mae", "kD", "gfn2 channel on mol@gfn1"),
                                 ("crystal_gfn1.forces_mae", "gs", "crystal@gfn1"),
                                 ("molecule_gfn2.forces_mae", "r^", "mol@gfn2")):
        axis.plot(x, series(metric)[0], style, linestyle="none", label=label)
    floor = 1000 * table["transfer_floor"]["forces_mae"]
    axis.axhline(floor, color="k", linestyle="--", linewidth=1, label=f"transfer floor {floor:.0f}")
    axis.set_xticks(x, [table["arms"][key]["label"] for key in keys], rotation=25, ha="right", fontsize=8)
    axis.set_ylabel("force MAE (meV/Å)")
    axis.set_title(f"Transfer-gap remedies at θT-L2 λ = {table['lambda']:g} (mean ± std over seeds)")
    axis.legend(fontsize=8)
    if points:
        axis = axes[0, 1]
        strengths = [point["lambda"] for point in points]
        for column, title, scale, _ in COLUMNS:
            if (column.startswith("molecule_gfn1") and column.endswith("forces_mae")) or "spread" in column:
                values = [scale * point["summary"][column]["mean"] if point["summary"][column] else np.nan for point in points]
                axis.plot(strengths, values, "o-" if "spread" not in column else "s--", label=title)
        axis.axhline(floor, color="k", linestyle="--", linewidth=1)
        axis.set_xscale("symlog", linthresh=1e-2)
        axis.set_xlim(left=0)
        axis.set_xlabel("θT-L2 λ (no remedy; 0 = no penalty)")
        axis.set_ylabel("meV/Å")
        axis.set_title("The gap on the GFN1 molecules against λ")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
