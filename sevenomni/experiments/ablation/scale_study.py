"""The per-task energy scale on two data sets: which treatment θT-L2 should use, chosen on validation.

Reads, for each data set D that has them, ``<results>/scale_study_<D>.json`` (benchmarks/ablation.py
with the arm multi_none and the θT-L2 arms ``multi_task`` and ``multi_task_scale_*``, three seeds) and,
if present, ``<results>/scale_study_dbs_<D>.json`` (the arm multi_dbs_task with the selected treatment).
Each run records the ``model.scale_per_task`` it trained with; ``multi_task`` follows the config's
default, so the treatments are told apart by that record, not by arm name.
Per data set and arm, mean ± std over seeds of: the validation criterion (scoring.validation_metrics;
the only number the selection sees), the GFN1 test molecules' force MAE on the gfn1 channel and on
the gfn2 channel and their ratio, the crystals' and GFN2 molecules' force MAE, ‖θT‖, and what
swapping the per-task scale from gfn2 into gfn1 closes of the channels' force gap
(``sevenomni analyze gap``). Per data set the treatment with the lowest validation mean wins; the
recipe default becomes the one that wins on every data set, or else the one that is not worse
(on validation, beyond one standard error of the paired difference) than the winner on any set.
Ties are broken in favour of the default before this study (a free scale per task), then in order
of simplicity (shared, penalized, fixed). Where no ``scale_study_small.json`` exists, the small set
enters with the three-seed runs that predate the study: θT-L2 at λ = 1 with the free scale
(``ablation_lambda_1.json``) and with one shared scale (``transfer_gap_shared_scale_lambda_1.json``),
and no penalty (``ablation_unregularized.json``); a treatment not run on a set cannot be shown not
worse there. Paired per-seed differences (same seed: same split, sampling and
initialization) compare each treatment with the free per-task scale (the default until 2026-12-05),
θT-L2 with no penalty, and DBS with no DBS.
Writes ``benchmarks/results/scale_study.{json,md,png}``.

    python benchmarks/scale_study_report.py [--results DIR] [--data tiny tiny_contrast]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sevenomni.experiments.ablation import report as ablation_report
from sevenomni.experiments.checkout import RESULTS, ROOT
from sevenomni.experiments.labels import reference

PREVIOUS_DEFAULT = True  # `model.scale_per_task` before this study (2026-12-05)
SIMPLICITY = [False, "penalized", "fixed", True]  # `model.scale_per_task` values, simplest first
# The small set's earlier three-seed runs: results file -> (arm, the arm it becomes, its scale treatment)
EARLIER_SMALL_SET = {
    "ablation_unregularized.json": ("multi_none", "multi_none", None),
    "ablation_lambda_1.json": ("multi_task", "multi_task", True),
    "transfer_gap_shared_scale_lambda_1.json": ("multi_task", "multi_task_scale_shared", False),
}
TREATMENT_NAMES = {True: "free per task (unpenalized)", False: "one shared scale",
                   "penalized": "shared × exp(s_t), s_t in θT", "fixed": "fixed from each task's force RMS"}
COLUMNS = [  # (key, title, factor, decimals)
    ("validation", "validation F", 1000, 0),
    ("mol_gfn1", "mol@gfn1 F, gfn1 ch.", 1000, 0),
    ("mol_gfn1_gfn2", "mol@gfn1 F, gfn2 ch.", 1000, 0),
    ("ratio", "gfn1 / gfn2 ch.", 1, 2),
    ("crystal", "crystal@gfn1 F", 1000, 0),
    ("mol_gfn2", "mol@gfn2 F", 1000, 0),
    ("theta_t", "‖θT‖", 1, 2),
    ("scale_closes", "scale swap closes", 1000, 0),
]


def run_values(run: dict) -> dict[str, float | None]:
    """The report's numbers for one run (eV/Å for forces)."""
    metrics = run["metrics"]
    gfn1 = metrics["molecule_gfn1"]["forces_mae"]
    gfn2 = metrics.get("molecule_gfn1_on_gfn2_channel", {}).get("forces_mae")
    parts = (metrics.get("molecule_gfn1_gap_parts") or {}).get("parts", {})
    return {
        "validation": run["validation"]["selection_forces_mae"],
        "mol_gfn1": gfn1,
        "mol_gfn1_gfn2": gfn2,
        "ratio": gfn1 / gfn2 if gfn2 else None,
        "crystal": metrics["crystal_gfn1"]["forces_mae"],
        "mol_gfn2": metrics.get("molecule_gfn2", {}).get("forces_mae"),
        "theta_t": metrics["theta_t_norm"],
        "scale_closes": parts.get("energy_scale", {}).get("closed"),
    }


def mean_std(values: list[float | None]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            "n": len(values), "values": values}


def summarize(runs: list[dict]) -> dict[str, dict]:
    """Arm -> column -> mean ± std over seeds."""
    table = {}
    for arm in dict.fromkeys(run["arm"] for run in runs):
        per_run = [run_values(run) for run in runs if run["arm"] == arm]
        table[arm] = {key: mean_std([values[key] for values in per_run]) for key, *_ in COLUMNS}
    return table


def paired_validation(runs: list[dict], first: str, second: str) -> dict | None:
    """Per-seed validation differences first − second (meV/Å)."""
    seeds, by_seed = ablation_report.seed_pairs(runs, first, second)
    if not seeds:
        return None
    differences = [1000 * (by_seed[first][s]["validation"]["selection_forces_mae"]
                           - by_seed[second][s]["validation"]["selection_forces_mae"]) for s in seeds]
    std = float(np.std(differences, ddof=1)) if len(differences) > 1 else None
    return {"seeds": seeds, "per_seed_meV_per_A": differences, "mean": float(np.mean(differences)), "std": std,
            "standard_error": std / np.sqrt(len(differences)) if std is not None else None}


def treatments(runs: list[dict]) -> dict[str, bool | str]:
    """θT-L2 arm -> the ``model.scale_per_task`` its runs trained with (the first arm of each treatment)."""
    found: dict[str, bool | str] = {}
    for run in runs:
        if not run["arm"].startswith("multi_task"):
            continue
        if "scale_per_task" not in run:
            raise SystemExit(f"run {run['run_dir']} has no scale_per_task record: score it again with "
                             "benchmarks/ablation.py (finished runs are not retrained)")
        if run["scale_per_task"] not in found.values() or run["arm"] in found:
            found[run["arm"]] = run["scale_per_task"]
    return found


def select(data_sets: dict[str, dict]) -> dict:
    """Per data set the validation winner among the θT-L2 treatments; then the recipe default."""
    winners, not_worse = {}, {}
    for name, entry in data_sets.items():
        arms = {value: arm for arm, value in entry["treatments"].items()}
        scored = {value: entry["summary"][arm]["validation"]["mean"] for value, arm in arms.items()}
        winner = min(scored, key=scored.get)
        winners[name] = winner
        not_worse[name] = []
        for value, arm in arms.items():
            difference = paired_validation(entry["runs"], arm, arms[winner])
            margin = (difference or {}).get("standard_error") or 0.0
            if value == winner or (difference is not None and difference["mean"] <= margin):
                not_worse[name].append(value)
    order = [PREVIOUS_DEFAULT] + [value for value in SIMPLICITY if value != PREVIOUS_DEFAULT]
    if len(set(winners.values())) == 1:
        default, reason = next(iter(winners.values())), "it has the lowest validation error on every data set"
    else:
        candidates = [value for value in order if all(value in not_worse[name] for name in data_sets)]
        default = candidates[0] if candidates else PREVIOUS_DEFAULT
        reason = ("no treatment wins on every data set; it is within one standard error of the winner on "
                  "every set (ties: the default before this study, then the simplest)" if candidates else
                  "no treatment wins on every data set and none is within one standard error of the winners "
                  "everywhere: the default before this study is kept")
    return {"winners": winners, "not_worse_than_winner": not_worse, "default_scale_per_task": default,
            "reason": reason}


def comparisons(entry: dict, dbs: dict | None, default: bool | str) -> dict:
    """The paired test-set differences this study reports for one data set."""
    runs = entry["runs"]
    arms = {value: arm for arm, value in entry["treatments"].items()}
    free, default_arm = arms[True], arms[default]
    pairs = {f"{arm} − {free}": ablation_report.paired(runs, arm, free) for arm in arms.values() if arm != free}
    pairs[f"{free} − multi_none"] = ablation_report.paired(runs, free, "multi_none")
    if default_arm != free:
        pairs[f"{default_arm} − multi_none"] = ablation_report.paired(runs, default_arm, "multi_none")
    if dbs is not None:
        combined = runs + [run | {"arm": "dbs"} for run in dbs["runs"]]
        pairs[f"DBS + {default_arm} − {default_arm}"] = ablation_report.paired(combined, "dbs", default_arm)
    return {key: value for key, value in pairs.items() if value is not None}


def cell(entry: dict | None, factor: float, decimals: int) -> str:
    if entry is None:
        return "—"
    text = f"{entry['mean'] * factor:.{decimals}f}"
    return text + (f" ± {entry['std'] * factor:.{decimals}f}" if entry["std"] is not None else "")


def markdown(record: dict) -> str:
    lines = ["# The per-task energy scale under θT-L2, on two data sets", "",
             "Force MAE in meV/Å, mean ± std over seeds; `validation F` is the selection criterion (the mean",
             "force MAE of the validation splits and of the held-out DBS molecules, own channels). `gfn1 / gfn2 ch.`:",
             "the GFN1 test molecules' force MAE on the gfn1 channel over that on the gfn2 channel (1 = no gap).",
             "`scale swap closes`: how much of the RMS gfn1 − gfn2 force gap on those molecules swapping the",
             "per-task scale alone removes (`sevenomni analyze gap`; 0 where the scale is shared).", ""]
    for name, entry in record["data_sets"].items():
        lines += [f"## {name} ({entry['steps']} steps, seeds {entry['seeds']})", "",
                  "Training databases: " + ("; ".join(
                      f"{k} force RMS {v['force_rms']:.2f} eV/Å, energy/atom spread {v['energy_per_atom_std']:.2f} eV"
                      for k, v in entry["labels_statistics"].items()) or "(the set's files are not here to count)"), ""]
        lines += ["| arm | " + " | ".join(title for _, title, *_ in COLUMNS) + " |",
                  "|---|" + "---:|" * len(COLUMNS)]
        for arm, summary in entry["summary"].items():
            lines.append(f"| {entry['labels'].get(arm, arm)} | "
                         + " | ".join(cell(summary.get(key), factor, decimals) for key, _, factor, decimals in COLUMNS) + " |")
        lines += ["", "| comparison | metric | per seed | mean | seeds lower |", "|---|---|---|---:|---:|"]
        for label, difference in entry["paired"].items():
            lines += ablation_report.difference_rows(label, difference)
        lines.append("")
    selection = record["selection"]
    lines += ["## Selection (validation only)", ""]
    lines += [f"- {name}: lowest validation error with `scale_per_task: {str(value).lower()}` ({TREATMENT_NAMES[value]})"
              for name, value in selection["winners"].items()]
    lines += [f"- recipe default: `model.scale_per_task: {str(selection['default_scale_per_task']).lower()}` "
              f"({TREATMENT_NAMES[selection['default_scale_per_task']]}): {selection['reason']}.", ""]
    return "\n".join(lines)


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(record["data_sets"])
    figure, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5), squeeze=False)
    for axis, name in zip(axes[0], names):
        entry = record["data_sets"][name]
        arms = list(entry["summary"])
        x = np.arange(len(arms))
        for offset, (key, label) in zip((-0.2, 0.2), (("mol_gfn1", "gfn1 channel"), ("mol_gfn1_gfn2", "gfn2 channel"))):
            values = [entry["summary"][arm][key] for arm in arms]
            axis.bar(x + offset, [1000 * v["mean"] if v else np.nan for v in values], 0.4, label=label,
                     yerr=[1000 * v["std"] if v and v["std"] is not None else 0 for v in values], capsize=3)
        axis.set_xticks(x, [entry["labels"].get(arm, arm) for arm in arms], rotation=25, ha="right", fontsize=8)
        axis.set_ylabel("GFN1 test molecules, force MAE (meV/Å)")
        axis.set_title(name, fontsize=10)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def load(results: Path, data: str) -> tuple[dict | None, dict | None]:
    study, dbs = results / f"scale_study_{data}.json", results / f"scale_study_dbs_{data}.json"
    if data == "small" and not study.exists():
        return earlier_small_set(results), None
    return (json.loads(study.read_text()) if study.exists() else None,
            json.loads(dbs.read_text()) if dbs.exists() else None)


def earlier_small_set(results: Path) -> dict | None:
    """The small set's three-seed runs of before the study, as one study record (see the module doc)."""
    files = {name: results / name for name in EARLIER_SMALL_SET}
    if not all(path.exists() for path in files.values()):
        return None
    record = {"runs": [], "arms": {}}
    for name, path in files.items():
        source, arm, treatment = EARLIER_SMALL_SET[name]
        data = json.loads(path.read_text())
        record.update({key: data[key] for key in ("steps", "seeds", "data_dir")})
        record["arms"][arm] = data["arms"][source]
        for run in data["runs"]:
            if run["arm"] == source:
                record["runs"].append(run | {"arm": arm} | ({} if treatment is None else {"scale_per_task": treatment}))
    record["arms"]["multi_task_scale_shared"] = record["arms"]["multi_task_scale_shared"] | {
        "label": "Multi, L2 θT, shared scale"}
    return record


def label_statistics(data_dir: Path) -> dict[str, dict[str, float]]:
    """Per training database of the set: force RMS (eV/Å) and the spread of energy per atom (eV),
    computed from the labels themselves (older manifests do not record them)."""
    from ase.io import read

    statistics = {}
    for path in sorted((ROOT / data_dir).glob("*.extxyz")):
        if path.stem.startswith("test_"):
            continue
        structures = read(path, index=":")
        labels = reference(structures)
        forces = np.concatenate(labels["forces"])
        per_atom = [energy / len(atoms) for energy, atoms in zip(labels["energy"], structures)]
        statistics[path.stem] = {"force_rms": float(np.sqrt(np.mean(forces**2))),
                                 "energy_per_atom_std": float(np.std(per_atom))}
    return statistics


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--data", nargs="+", default=["tiny", "tiny_contrast", "small", "small_contrast"])
    parser.add_argument("--out", type=Path, default=RESULTS / "scale_study")
    args = parser.parse_args(argv)
    data_sets, dbs_results = {}, {}
    for data in args.data:
        study, dbs = load(args.results, data)
        if study is None:
            continue
        labels = {arm: spec["label"] for arm, spec in study["arms"].items()}
        data_sets[data] = {"steps": study["steps"], "seeds": study["seeds"], "labels": labels,
                           "labels_statistics": label_statistics(Path(study["data_dir"])), "runs": study["runs"],
                           "summary": summarize(study["runs"]), "treatments": treatments(study["runs"])}
        if dbs is not None:
            dbs_results[data] = dbs
            data_sets[data]["summary"]["dbs"] = summarize([run | {"arm": "dbs"} for run in dbs["runs"]])["dbs"]
            data_sets[data]["labels"]["dbs"] = "Multi+DBS, L2 θT, selected scale (" + (" ".join(dbs["extra_overrides"]) or "the default") + ")"
    if not data_sets:
        raise SystemExit(f"no scale_study_<data>.json in {args.results}")
    record = {"data_sets": data_sets, "selection": select(data_sets)}
    for name, entry in data_sets.items():
        entry["paired"] = comparisons(entry, dbs_results.get(name), record["selection"]["default_scale_per_task"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(record))
    plot(record, args.out.with_suffix(".png"))
    print(markdown(record))
    return record
