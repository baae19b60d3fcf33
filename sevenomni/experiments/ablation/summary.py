"""The ablation's results over seeds: aggregation, the markdown table and the bar plot."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

# (key, column title, unit, scale, decimals) of the table; keys are flattened metric names.
COLUMNS = [
    ("molecule_gfn1.forces_mae", "mol@gfn1 F", "meV/Å", 1000, 0),
    ("molecule_gfn1.conformational_energy_mae", "mol@gfn1 ΔE", "meV/atom", 1, 1),
    ("crystal_gfn1.forces_mae", "crystal@gfn1 F", "meV/Å", 1000, 0),
    ("crystal_gfn1.energy_mae", "crystal@gfn1 E", "meV/atom", 1, 1),
    ("molecule_gfn2.forces_mae", "mol@gfn2 F", "meV/Å", 1000, 0),
    ("molecule_gfn1_on_gfn2_channel.forces_mae", "gfn2 ch. on mol@gfn1 F", "meV/Å", 1000, 0),
    ("molecule_gfn1_on_common.forces_mae", "common on mol@gfn1 F", "meV/Å", 1000, 0),
    ("theta_t_norm", "‖θT‖", "", 1, 2),
    ("train_wall_s", "train time", "s", 1, 0),
]


def flatten(metrics: dict, prefix: str = "") -> dict[str, float]:
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def aggregate(runs: list[dict]) -> dict[str, dict]:
    """Per arm and metric: mean, sample std (None for one seed) and count over seeds."""
    summary: dict[str, dict] = {}
    for arm in dict.fromkeys(run["arm"] for run in runs):
        values: dict[str, list[float]] = {}
        for run in (r for r in runs if r["arm"] == arm):
            scores = {"validation_forces_mae": run["validation"]["selection_forces_mae"]}
            for key, value in flatten({**run["metrics"], **scores, "train_wall_s": run["train_wall_s"]}).items():
                values.setdefault(key, []).append(value)
        summary[arm] = {
            key: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else None, "n": len(v)}
            for key, v in values.items()
        }
    return summary


def finite_or_none(value):
    """JSON-ready copy: numpy scalars to Python numbers, NaN/inf to None."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_cell(entry: dict | None, scale: float, decimals: int) -> str:
    """'mean ± std' of a summary entry, scaled; '–' where there is none."""
    if entry is None or entry["mean"] is None or not math.isfinite(entry["mean"]):
        return "–"
    text = f"{entry['mean'] * scale:.{decimals}f}"
    if entry.get("std") is not None:
        text += f" ± {entry['std'] * scale:.{decimals}f}"
    return text


def arm_table(result: dict) -> list[str]:
    """The table's title, explanation, one row per arm and the transfer floor (markdown lines)."""
    floor, seeds = result["transfer_floor"], result["seeds"]
    spread = "mean ± sample std over seeds" if len(seeds) > 1 else "one seed (no spread)"
    intro = (
        f"{len(result['arms'])} arms × seeds {seeds}, {result['steps']} steps each; {spread}. "
        "mol@gfn1 = held-out molecules labelled with GFN1-xTB on the gfn1 channel (out of domain for the "
        "crystals); ΔE = conformational-energy MAE (each molecule's mean error removed); crystal@gfn1 on the "
        "gfn1 channel; mol@gfn2 on the gfn2 channel; 'gfn2 ch. on mol@gfn1' = the gfn2 channel scored "
        "against the GFN1 labels; 'common' = θT = 0 with the gfn1 shifts; train time = wall time of one "
        "`sevenomni train` run."
    )
    header = " | ".join(title + (f" ({unit})" if unit else "") for _, title, unit, _, _ in COLUMNS)
    lines = [
        f"# Selective-regularization ablation — data `{result['data']}`",
        "",
        intro,
        "",
        f"| arm | {header} |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    for arm, entry in result["arms"].items():
        summary = result["summary"].get(arm, {})
        cells = [format_cell(summary.get(key), scale, decimals) for key, _, _, scale, decimals in COLUMNS]
        lines.append(f"| {entry['label']} | " + " | ".join(cells) + " |")
    floor_line = (
        f"Transfer floor (GFN2 labels scored against GFN1 labels on the {floor['n_structures']} test molecules): "
        f"force MAE {1000 * floor['forces_mae']:.0f} meV/Å, conformational-energy MAE "
        f"{floor['conformational_energy_mae']:.1f} meV/atom."
    )
    return [*lines, "", floor_line]


def markdown_table(result: dict) -> str:
    machine = result["machine"]
    span = result.get("training_span_s")
    trained = f"Training took {span / 60:.1f} min of wall time (first start to last end); " if span else ""
    time_line = (
        f"{trained}this invocation {result['total_wall_s'] / 60:.1f} min, on {machine['platform']} "
        f"({machine['cpus_available']} CPUs, {machine.get('concurrent_runs', 1)} run(s) at a time, "
        f"{machine['threads_per_run']} torch thread(s) per run)."
    )
    return "\n".join([*arm_table(result), time_line, ""])


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(result["arms"])
    summary = result["summary"]

    def series(key: str) -> tuple[np.ndarray, np.ndarray]:
        means, stds = [], []
        for arm in arms:
            entry = summary.get(arm, {}).get(key)
            means.append(1000 * entry["mean"] if entry else np.nan)
            stds.append(1000 * entry["std"] if entry and entry["std"] is not None else 0.0)
        return np.array(means), np.array(stds)

    x = np.arange(len(arms))
    width = 0.26
    figure, axis = plt.subplots(figsize=(max(7.0, 1.3 * len(arms) + 2), 5.4))
    bars = [
        ("molecule_gfn1.forces_mae", "molecule@gfn1 (gfn1 channel)", "tab:blue", -width),
        ("crystal_gfn1.forces_mae", "crystal@gfn1", "tab:gray", 0.0),
        ("molecule_gfn2.forces_mae", "molecule@gfn2 (gfn2 channel)", "tab:orange", width),
    ]
    for key, label, color, offset in bars:
        means, stds = series(key)
        axis.bar(x + offset, means, width, yerr=stds if stds.any() else None, label=label, color=color, capsize=3)
    means, _ = series("molecule_gfn1_on_gfn2_channel.forces_mae")
    axis.plot(x - width, means, "kD", markersize=6, label="gfn2 channel on molecule@gfn1")
    floor = 1000 * result["transfer_floor"]["forces_mae"]
    axis.axhline(floor, color="k", linestyle="--", linewidth=1, label=f"transfer floor |F(GFN1)-F(GFN2)| = {floor:.0f}")
    axis.set_xticks(x, [result["arms"][arm]["label"] for arm in arms], rotation=20, ha="right")
    axis.set_ylabel("force MAE (meV/Å)")
    axis.set_title(f"Ablation on the {result['data']} set: {result['steps']} steps, seeds {result['seeds']}", pad=58)
    norms = np.array([summary.get(arm, {}).get("theta_t_norm", {"mean": np.nan})["mean"] for arm in arms])
    right = axis.twinx()
    right.plot(x, norms, "o", color="tab:red", label="‖θT‖ (right axis)")
    right.set_ylabel("‖θT‖", color="tab:red")
    right.set_ylim(0, max(1e-9, np.nanmax(norms)) * 1.25 if np.isfinite(norms).any() else 1)
    handles = axis.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    labels = axis.get_legend_handles_labels()[1] + right.get_legend_handles_labels()[1]
    axis.legend(handles, labels, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    plt.close(figure)
