"""Selective-regularization ablation (seed 002, Fig. 1d) at laptop scale, with xTB labels.

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
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "ablation"
DATA_ROOT = ROOT / "recipes" / "data"
GENERATOR = ROOT / "scripts" / "make_multifidelity_data.py"
TEST_SETS = {
    "crystal_gfn1": "test_crystal_gfn1.extxyz",
    "molecule_gfn2": "test_molecule_gfn2.extxyz",
    "molecule_gfn1": "test_molecule_gfn1.extxyz",
}
RUN_RECORD = "ablation_run.json"
CONSOLE_LOG = "console.log"  # everything the training command printed (its own train.log has the messages)

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


# ---------------------------------------------------------------------------------- arms


def load_arms(path: Path = RECIPES / "arms.yaml") -> dict[str, dict]:
    """Arm name -> {label, config (path), set (overrides)}."""
    arms = yaml.safe_load(path.read_text())
    for name, arm in arms.items():
        arm["config"] = str((path.parent / arm["config"]).resolve())
        arm.setdefault("set", [])
        arm.setdefault("label", name)
    return arms


def data_overrides(config: str | Path, data: str) -> list[str]:
    """--set overrides pointing every database of ``config`` at recipes/data/<data>/ (same file names)."""
    config = Path(config)
    raw = yaml.safe_load(config.read_text())
    overrides = []
    for index, database in enumerate(raw["data"]["databases"]):
        name = Path(database["path"]).name
        relative = os.path.relpath(DATA_ROOT / data / name, config.parent)
        overrides.append(f"data.databases.{index}.path={relative}")
    return overrides


def run_overrides(arm: dict, data: str, seed: int, steps: int | None, extra: Sequence[str]) -> list[str]:
    """Everything an arm × seed run sets on top of its config (run_dir and cache_dir excluded)."""
    overrides = list(arm["set"]) + data_overrides(arm["config"], data)
    overrides += [f"train.seed={seed}", f"data.sampling.seed={seed}", "train.progress_bar=false"]
    if steps is not None:
        overrides.append(f"stages.0.steps={steps}")
    return overrides + list(extra)


# ---------------------------------------------------------------------------------- data


# Data sets by name: <preset> (standard make-up) or <preset>_contrast (the second data set, built to
# differ; see scripts/make_multifidelity_data.py). The tiny ones are committed.
DATA_SETS = ("small", "tiny", "small_contrast", "tiny_contrast")
COMMITTED_DATA = ("tiny", "tiny_contrast")


def ensure_data(data: str, workers: int) -> Path:
    """recipes/data/<data>, generated with scripts/make_multifidelity_data.py if missing."""
    directory = DATA_ROOT / data
    if not (directory / "manifest.json").is_file():
        if data in COMMITTED_DATA:
            raise FileNotFoundError(f"{directory} is missing (it is committed; check out the repository)")
        print(f"[ablation] generating the {data} data set into {directory} (xTB labelling; this takes a while)")
        preset, _, makeup = data.partition("_")
        command = [sys.executable, str(GENERATOR), "--preset", preset, "--makeup", makeup or "standard",
                   "--out", str(directory), "--workers", str(workers), "--no-progress"]
        subprocess.run(command, check=True, cwd=ROOT)
    return directory


def read_test_sets(directory: Path) -> dict[str, list]:
    from ase.io import read

    sets = {key: read(directory / name, ":") for key, name in TEST_SETS.items()}
    ids_gfn1 = [a.info.get("struct_id") for a in sets["molecule_gfn1"]]
    ids_gfn2 = [a.info.get("struct_id") for a in sets["molecule_gfn2"]]
    if ids_gfn1 != ids_gfn2:
        raise ValueError(f"{directory}: test_molecule_gfn1 and test_molecule_gfn2 do not hold the same structures")
    return sets


# ---------------------------------------------------------------------------------- metrics


def reference(structures: list) -> dict[str, list]:
    return {
        "energy": [float(a.info["REF_energy"]) for a in structures],
        "forces": [np.asarray(a.arrays["REF_forces"], dtype=float) for a in structures],
        "stress": [np.asarray(a.info["REF_stress"], dtype=float) if "REF_stress" in a.info else None
                   for a in structures],
    }


def force_errors(predicted: list[np.ndarray], labels: list[np.ndarray]) -> np.ndarray:
    """Component-wise force errors of all atoms, flattened (eV/Å)."""
    return np.concatenate([(p - r).ravel() for p, r in zip(predicted, labels)])


def per_atom_energy_errors(predicted: Sequence[float], labels: Sequence[float], structures: list) -> np.ndarray:
    """(E_pred - E_ref) / N per structure (eV/atom)."""
    sizes = np.array([len(a) for a in structures], dtype=float)
    return (np.asarray(predicted) - np.asarray(labels)) / sizes


def conformational_energy_errors(predicted: Sequence[float], labels: Sequence[float], structures: list) -> np.ndarray:
    """Energy errors per atom after removing each molecule's mean error (same molecule = same ``source``).

    Only energy differences between conformations of one molecule are compared: the absolute
    references of two methods (or of a channel and foreign labels) differ by a constant per molecule.
    Same convention as the generator's transfer floor: mean removed from total energies, then / N.
    """
    errors = np.asarray(predicted) - np.asarray(labels)
    sizes = np.array([len(a) for a in structures], dtype=float)
    groups = np.array([a.info.get("source", "") for a in structures])
    centred = errors.copy()
    for group in np.unique(groups):
        members = groups == group
        centred[members] -= errors[members].mean()
    return centred / sizes


def mae(values: np.ndarray) -> float:
    return float(np.abs(values).mean()) if len(values) else float("nan")


def score(predictions: list[dict], structures: list, labels: list | None = None, molecules: bool = False) -> dict:
    """Force MAE/RMSE, energy MAE (meV/atom; conformational for molecules) and stress MAE."""
    labels = reference(labels if labels is not None else structures)
    forces = force_errors([p["forces"] for p in predictions], labels["forces"])
    energies = [p["energy"] for p in predictions]
    metrics = {
        "forces_mae": mae(forces),
        "forces_rmse": float(np.sqrt(np.mean(forces**2))),
        "energy_mae": 1000 * mae(per_atom_energy_errors(energies, labels["energy"], structures)),
    }
    if molecules:
        metrics["conformational_energy_mae"] = 1000 * mae(conformational_energy_errors(energies, labels["energy"], structures))
    stresses = [(p["stress"], s) for p, s in zip(predictions, labels["stress"]) if s is not None and "stress" in p]
    if stresses:
        metrics["stress_mae"] = mae(np.concatenate([p - s for p, s in stresses]))
    return metrics


def channel_predictions(model, structures: list, channel: str, shift_task: str | None = None) -> list[dict]:
    import sevenomni

    return list(sevenomni.predict(model, structures, channel, shift_task=shift_task, batch_size=16, device="cpu"))


@contextmanager
def torch_threads(count: int):
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def evaluate_model(model_path: Path, sets: dict[str, list]) -> dict:
    """Every metric of one trained model on the test sets (see the module docstring)."""
    import sevenomni
    from sevenomni.analysis.channel_gap import channel_gap
    from sevenomni.train import task_embedding_norm

    model = sevenomni.load_model(model_path)
    tasks = [t.lower() for t in model.tasks]
    molecules, crystals = sets["molecule_gfn1"], sets["crystal_gfn1"]
    on_gfn1 = channel_predictions(model, molecules, "gfn1")
    on_common = channel_predictions(model, molecules, "common", shift_task="gfn1")
    metrics = {
        "tasks": model.tasks,
        "theta_t_norm": task_embedding_norm(model),
        "molecule_gfn1": score(on_gfn1, molecules, molecules=True),
        "crystal_gfn1": score(channel_predictions(model, crystals, "gfn1"), crystals),
        "molecule_gfn1_on_common": score(on_common, molecules, molecules=True),
        "molecule_gfn1_spread_to_common": channel_spread(on_gfn1, on_common),
    }
    if "gfn2" in tasks:
        on_gfn2 = channel_predictions(model, molecules, "gfn2")  # the same structures as the gfn2 test set
        metrics["molecule_gfn2"] = score(on_gfn2, molecules, sets["molecule_gfn2"], molecules=True)
        metrics["molecule_gfn1_on_gfn2_channel"] = score(on_gfn2, molecules, molecules=True)
        metrics["molecule_gfn1_spread_to_gfn2"] = channel_spread(on_gfn1, on_gfn2)
        metrics["molecule_gfn1_gap_parts"] = channel_gap(model, molecules, "gfn1", "gfn2")
    return metrics


def channel_spread(predictions: list[dict], others: list[dict]) -> dict:
    """``sevenomni eval``'s channel spread between two channels' predictions of the same structures."""
    from sevenomni.analysis.metrics import ChannelSpread

    spread = ChannelSpread()
    for mine, theirs in zip(predictions, others, strict=True):
        spread.add_structure(mine["forces"], theirs["forces"], mine["energy"], theirs["energy"])
    return spread.summary()


def validation_metrics(run_dir: Path) -> dict:
    """The run's final validation on its own channels, for choosing λ without the test sets.

    Per database that is not a test set (the validation splits of the trained databases, and the
    DBS when the arm does not train on it): force and energy MAE. ``selection_forces_mae`` is
    their mean force MAE, the criterion the λ sweeps are chosen on.
    """
    rows = [json.loads(line) for line in (run_dir / "final.jsonl").read_text().splitlines() if line.strip()]
    per_database = {
        row["database"]: {"forces_mae": row["forces_mae"], "energy_mae": row["energy_mae"]}
        for row in rows
        if row["own"] and not row["database"].startswith("test_")
    }
    values = [entry["forces_mae"] for entry in per_database.values()]
    return {"databases": per_database, "selection_forces_mae": float(np.mean(values)) if values else None}


def transfer_floor(sets: dict[str, list]) -> dict:
    """GFN1 vs GFN2 labels on the same test molecules: the best a copy of the other method can do."""
    gfn1, gfn2 = reference(sets["molecule_gfn1"]), reference(sets["molecule_gfn2"])
    molecules = sets["molecule_gfn1"]
    forces = force_errors(gfn2["forces"], gfn1["forces"])
    return {
        "n_structures": len(molecules),
        "forces_mae": mae(forces),
        "forces_rmse": float(np.sqrt(np.mean(forces**2))),
        "conformational_energy_mae": 1000 * mae(conformational_energy_errors(gfn2["energy"], gfn1["energy"], molecules)),
        "note": "GFN2-xTB labels scored against GFN1-xTB labels on test_molecule_* (eV/Å; meV/atom)",
    }


# ---------------------------------------------------------------------------------- training


def shown(path: Path) -> str:
    """A path relative to the repository if it lies inside it (the runs run from the repository root)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def read_record(run_dir: Path) -> dict | None:
    path = run_dir / RUN_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def write_record(run_dir: Path, record: dict) -> None:
    temporary = run_dir / (RUN_RECORD + ".tmp")
    temporary.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(temporary, run_dir / RUN_RECORD)


UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime(UTC_FORMAT)


def training_span_s(runs: list[dict]) -> float | None:
    """Wall time from the first training attempt's start to the last one's end (runs overlap with --jobs)."""
    attempts = [a for run in runs for a in run["attempts"] if "started_utc" in a]
    if not attempts:
        return None
    starts = [datetime.strptime(a["started_utc"], UTC_FORMAT) for a in attempts]
    ends = [datetime.strptime(a["ended_utc"], UTC_FORMAT) for a in attempts]
    return (max(ends) - min(starts)).total_seconds()


def train_run(run_dir: Path, config: str, overrides: list[str], cache_dir: Path, threads: int) -> dict:
    """Train one arm × seed through the CLI unless finished; resume an interrupted run.

    Returns the run record (spec, attempts with wall times, command).
    """
    spec = {"config": os.path.relpath(config, ROOT), "set": overrides}
    record = read_record(run_dir)
    if record is not None and record["spec"] != spec:
        raise RuntimeError(
            f"{run_dir} holds a run of a different setup ({record['spec']} != {spec}); "
            "delete it or choose another --work directory"
        )
    if (run_dir / "model.pt").is_file() and record is not None and record.get("finished"):
        print(f"[ablation] {run_dir}: finished earlier, skipped")
        return record
    if record is None and run_dir.exists() and any(run_dir.iterdir()):
        raise RuntimeError(f"{run_dir} exists but was not made by this runner; delete it or choose another --work")
    resume = (run_dir / "checkpoints" / "last.pt").is_file() and record is not None
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)  # our run that died before its first checkpoint starts again
    run_dir.mkdir(parents=True, exist_ok=True)
    record = record if resume else {"spec": spec, "attempts": []}
    placement = [f"train.run_dir={run_dir}", f"data.cache_dir={cache_dir}"]
    # --overwrite: the directory holds only this runner's record (an earlier attempt was removed above).
    fresh = [sys.executable, "-m", "sevenomni.cli", "train", spec["config"], "--overwrite"]
    fresh += [item for assignment in overrides + placement for item in ("--set", assignment)]
    command = [sys.executable, "-m", "sevenomni.cli", "train", "--resume", str(run_dir)] if resume else fresh
    shown_placement = [f"train.run_dir={shown(run_dir)}", f"data.cache_dir={shown(cache_dir)}"]
    record["command"] = " ".join(["sevenomni", "train", spec["config"]] + [f"--set '{a}'" for a in overrides + shown_placement])
    write_record(run_dir, record)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    print(f"[ablation] {'resuming' if resume else 'training'} {run_dir}")
    started_utc, start = utc_now(), time.perf_counter()
    with open(run_dir / CONSOLE_LOG, "a") as log:
        process = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    wall = time.perf_counter() - start
    record["attempts"].append({
        "wall_s": round(wall, 2), "resumed": resume, "returncode": process.returncode,
        "started_utc": started_utc, "ended_utc": utc_now(),
    })
    record["finished"] = process.returncode == 0 and (run_dir / "model.pt").is_file()
    write_record(run_dir, record)
    if not record["finished"]:
        tail = (run_dir / CONSOLE_LOG).read_text()[-3000:]
        raise RuntimeError(f"training {run_dir} failed (exit {process.returncode}); end of {CONSOLE_LOG}:\n{tail}")
    return record


def train_all(jobs: list[tuple[int, str]], arms: dict[str, dict], run_dirs: dict, args: argparse.Namespace,
              cache_dir: Path) -> dict:
    """Train every (seed, arm) job, ``args.jobs`` at a time; (seed, arm) -> run record.

    A failed run does not stop the others (they keep their results); the first failure is raised
    once all have ended.
    """
    def train(job: tuple[int, str]) -> dict:
        seed, name = job
        overrides = run_overrides(arms[name], args.data, seed, args.steps, args.set)
        return train_run(run_dirs[job], arms[name]["config"], overrides, cache_dir, args.threads)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {job: pool.submit(train, job) for job in jobs}
    failures = [future.exception() for future in futures.values() if future.exception() is not None]
    if failures:
        raise failures[0]
    return {job: future.result() for job, future in futures.items()}


# ---------------------------------------------------------------------------------- summary


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


def machine_info(threads: int, jobs: int) -> dict:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads_per_run": threads,
        "concurrent_runs": jobs,
    }


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


# ---------------------------------------------------------------------------------- driver


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--data", choices=DATA_SETS, default="small")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default: the configs')")
    parser.add_argument("--arms", nargs="+", default=None, help="arm names of recipes/ablation/arms.yaml (default all)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
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
        "benchmark": "selective-regularization ablation (seed 002, Fig. 1d), xTB labels",
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
        "machine": machine_info(args.threads, args.jobs),
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


if __name__ == "__main__":
    main()
