"""The λ sweeps of the ablation: choose each regularization mode's λ on validation, never on test.

Reads the runner's sweep results (``benchmarks/results/ablation_lambda_<λ>.json``: "Multi, L2 θT";
``ablation_all_lambda_<λ>.json``: "Multi, L2 all"), one file per λ, each with its seeds. For each
mode and λ: the validation criterion (mean force MAE over the validation splits of the training
databases and the DBS, which these arms do not train on; see ``ablation.validation_metrics``) and
the test metrics, mean ± std over seeds. The selected λ minimizes the validation criterion; the
λ the test molecules would have preferred is reported beside it. Writes
``benchmarks/results/ablation_sweeps.{json,md,png}`` (the png: test error against ‖θT‖, every run).

    python benchmarks/ablation_sweeps.py
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
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


def sweep(results_dir: Path, mode: str) -> list[dict]:
    prefix, arm, _ = MODES[mode]
    points = []
    for path in sorted(results_dir.glob(f"{prefix}*.json")):
        if mode == "task" and path.name.startswith("ablation_all_"):
            continue
        result = json.loads(path.read_text())
        runs = [run for run in result["runs"] if run["arm"] == arm]
        if not runs or any("validation" not in run for run in runs):
            continue
        summary = result["summary"][arm]
        points.append({
            "lambda": strength(result), "file": path.name, "seeds": [run["seed"] for run in runs],
            "summary": {key: summary.get(key) for key, *_ in COLUMNS},
            "runs": [{"seed": run["seed"], "theta_t_norm": run["metrics"]["theta_t_norm"],
                      "molecule_gfn1_forces_mae": run["metrics"]["molecule_gfn1"]["forces_mae"],
                      "validation_forces_mae": run["validation"]["selection_forces_mae"]} for run in runs],
        })
    return sorted(points, key=lambda point: point["lambda"])


def best(points: list[dict], key: str) -> float | None:
    scored = [(point["summary"][key]["mean"], point["lambda"]) for point in points if point["summary"].get(key)]
    return min(scored)[1] if scored else None


def cell(entry: dict | None, scale: float, decimals: int) -> str:
    if not entry:
        return "–"
    text = f"{entry['mean'] * scale:.{decimals}f}"
    return text + (f" ± {entry['std'] * scale:.{decimals}f}" if entry.get("std") is not None else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    results_dir = Path(args.results)
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
            cells = [cell(point["summary"].get(key), scale, decimals) for key, _, scale, decimals in COLUMNS]
            mark = " (selected)" if point["lambda"] == chosen else ""
            lines.append(f"| {point['lambda']:g}{mark} | {len(point['seeds'])} | " + " | ".join(cells) + " |")
        lines += ["", f"Selected on validation: λ = {chosen:g}; the test molecules would have preferred "
                  f"λ = {test_choice:g}.", ""]
    (results_dir / "ablation_sweeps.json").write_text(json.dumps(record, indent=1) + "\n")
    (results_dir / "ablation_sweeps.md").write_text("\n".join(lines) + "\n")
    plot(record, results_dir / "ablation_sweeps.png")
    print("\n".join(lines))
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
