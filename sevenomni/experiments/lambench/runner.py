"""LAMBench-style metrics (LAMBench, arXiv:2504.19578) for a sevenomni model or any ASE calculator.

    python benchmarks/lambench.py --model runs/quickstart/model.pt --name quickstart
    python benchmarks/lambench.py --model 7net-0 --name "7net-0 (imported)"
    python benchmarks/lambench.py --calculator sevenn.calculator:SevenNetCalculator \\
        --kwargs '{"model": "7net-0", "device": "cpu"}' --name "7net-0 (SevenNetCalculator)"

Three of LAMBench's metrics, defined as LAMBench defines them, at laptop scale on the held-out sets
the repository generates (``recipes/data/tiny/test_*.extxyz``):

1. **Normalized force-field error** M_FF. Per test set and prediction type (energy per atom, force
   components, virial per atom where stress labels exist), the model's RMSE is divided by that of
   a dummy model that knows only the composition: energies from a least-squares fit of the labels
   on element counts, zero forces, zero virial; capped at 1. The model's energies get the same
   treatment first (LAMBench's zero-shot energy-bias adjustment: a per-element shift fitted by least
   squares to its errors on the set), so a method with another absolute reference is not penalized
   for it. Per domain, the geometric mean over its test sets, then the weighted mean over types
   (E 0.5, F 0.5; with virials E 0.45, F 0.45, V 0.1); M_FF is the mean over domains (here:
   inorganic crystals, small molecules). 1 = as bad as the dummy, 0 = perfect.
2. **Efficiency**: µs per atom for energy + forces + stress on cells replicated to 800–1,000
   atoms (rattled before each call so nothing is cached), after warm-up calls;
   M_E = 100 µs/atom ÷ that time (larger is faster).
3. **Instability**: NVE VelocityVerlet at 1 fs from Maxwell–Boltzmann velocities at 300 K (no net
   momentum; no net rotation for molecules);
   Φ = |slope| of the total energy per atom against time (eV/atom/ps) after discarding the
   first 20 % of the steps; index max(0, log10(Φ / 5·10⁻⁴)), 5 if the run fails (an error,
   a non-finite energy, or Φ ≥ 50); M_IS is the mean over the structures.

A sevenomni model is evaluated on each test set's own channel (the task named in the set's
name, e.g. ``gfn1`` for ``test_molecule_gfn1``; a single-task model on its one task); any other
calculator on all sets as it is. Each run adds (or replaces) its ``--name`` entry in
``<out>.json`` and rewrites ``<out>.md`` from all entries.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from sevenomni.analysis.json_output import json_ready
from sevenomni.experiments.checkout import DATA_ROOT, RESULTS, ROOT
from sevenomni.experiments.labels import reference
from sevenomni.experiments.lambench.accuracy import (
    TEST_SETS,
    force_field_errors,
    force_field_metric,
    load_sets,
    predict_all,
)
from sevenomni.experiments.lambench.efficiency import EFFICIENCY_STRUCTURES, CalculatorFor, efficiency
from sevenomni.experiments.lambench.instability import MD_STRUCTURES, instability
from sevenomni.experiments.machine import machine_info


def sevenomni_calculators(model: str, device: str) -> tuple[CalculatorFor, dict[str, str]]:
    """One SevenOmniCalculator per task; each test set on the channel its name names."""
    from sevenomni.analysis.evaluate import infer_own_task
    from sevenomni.calculators.ase_calculator import SevenOmniCalculator
    from sevenomni.model_io.loading import load_model

    loaded = load_model(model)
    channels = {}
    for name in TEST_SETS:
        task = infer_own_task(name, loaded.tasks)
        if task is None:
            raise SystemExit(f"{model}: no task of {loaded.tasks} matches test set {name}")
        channels[name] = task
    calculators = {task: SevenOmniCalculator(loaded, task=task, device=device) for task in set(channels.values())}
    return (lambda set_name: calculators[channels[set_name]]), channels


def ase_calculator(factory: str, kwargs: dict) -> CalculatorFor:
    """``module:callable`` called with ``kwargs``; the same calculator for every set."""
    module, _, attribute = factory.partition(":")
    if not attribute:
        raise SystemExit(f"--calculator expects MODULE:CALLABLE, got {factory!r}")
    calculator = getattr(importlib.import_module(module), attribute)(**kwargs)
    return lambda set_name: calculator


# ---------------------------------------------------------------------------------- run and report


def evaluate(calculator_for: CalculatorFor, sets: dict, settings: dict) -> dict:
    started = time.perf_counter()
    per_set = {}
    for name, structures in sets.items():
        with_stress = [stress is not None for stress in reference(structures)["stress"]]
        per_set[name] = force_field_errors(structures, predict_all(calculator_for(name), structures, with_stress))
        print(f"[lambench] {name}: normalized " + ", ".join(
            f"{k} {v:.3f}" for k, v in per_set[name]["normalized"].items()), flush=True)
    accuracy_s = time.perf_counter() - started
    force_field = {"sets": per_set, **force_field_metric(per_set)}
    started = time.perf_counter()
    speed = efficiency(calculator_for, sets, settings["efficiency_structures"], settings["warmup"], settings["repeats"])
    efficiency_s = time.perf_counter() - started
    started = time.perf_counter()
    stability = instability(calculator_for, sets, settings["md_structures"], settings["md_steps"])
    return {
        "force_field": force_field, "efficiency": speed, "instability": stability,
        "wall_s": {"accuracy": accuracy_s, "efficiency": efficiency_s, "instability": time.perf_counter() - started},
    }


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def format_number(value: float | None, digits: int = 3, kind: str = "f") -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}{kind}}"


def markdown(results: dict) -> str:
    """Tables of every model in ``results``: summary, raw errors, efficiency and MD per structure."""
    lines = ["# LAMBench-style metrics", "", results["description"], ""]
    settings = results["settings"]
    lines += [
        f"Test sets: {', '.join(f'{n} ({c})' for n, c in settings['test_set_sizes'].items())} structures "
        f"from `{settings['data']}`. Efficiency: {', '.join(settings['efficiency_structures'])} replicated to "
        f"800–1,000 atoms, {settings['warmup']} warm-up + {settings['repeats']} timed calls each. Instability: "
        f"{settings['md_steps']} NVE steps of {settings['timestep_fs']} fs from {settings['temperature_K']} K on "
        f"{', '.join(settings['md_structures'])}.",
        "",
        "| model | M_FF ↓ | crystals E / F / V | molecules E / F | µs/atom ↓ | M_E ↑ | M_IS ↓ |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, entry in results["models"].items():
        domains = entry["force_field"]["domains"]
        cells = []
        for domain, kinds in (("inorganic crystals", ("energy", "forces", "virial")),
                              ("small molecules", ("energy", "forces"))):
            by_type = domains.get(domain, {}).get("by_type", {})
            cells.append(" / ".join(format_number(by_type.get(k), 2) for k in kinds))
        lines.append(
            f"| {name} | {format_number(entry['force_field']['M_FF'])} | {cells[0]} | {cells[1]} | "
            f"{format_number(entry['efficiency']['us_per_atom'], 1)} | {format_number(entry['efficiency']['M_E'], 2, 'g')} | "
            f"{format_number(entry['instability']['M_IS'], 2)} |"
        )
    lines += ["", "RMSEs (energy and virial per atom in meV/atom after the per-element bias fit; forces in meV/Å); "
              "the dummy row is the composition-only model:", "",
              "| model | " + " | ".join(f"{n} E / F" + (" / V" if n == "test_crystal_gfn1" else "") for n in TEST_SETS) + " |",
              "|---|" + "---:|" * len(TEST_SETS)]

    def rmse_cells(errors_of: Callable[[str], dict]) -> str:
        cells = []
        for set_name in TEST_SETS:
            errors = errors_of(set_name)
            cells.append(" / ".join(format_number(1000 * errors[k], 0) for k in ("energy", "forces", "virial") if k in errors))
        return " | ".join(cells)

    first = next(iter(results["models"].values()))
    rows = [("dummy", first, "dummy_rmse")] + [(name, entry, "model_rmse") for name, entry in results["models"].items()]
    for name, entry, kind in rows:
        lines.append(f"| {name} | {rmse_cells(lambda s, e=entry, k=kind: e['force_field']['sets'][s][k])} |")
    lines += ["", "Per structure (µs/atom; NVE energy drift Φ in eV/atom/ps, index):", "",
              "| model | " + " | ".join(f"{s['structure']} ({s['atoms']} at.)" for s in first["efficiency"]["structures"])
              + " | " + " | ".join(f"NVE {s['structure']} ({s['atoms']} at.)" for s in first["instability"]["structures"]) + " |",
              "|---|" + "---:|" * (len(first["efficiency"]["structures"]) + len(first["instability"]["structures"]))]
    for name, entry in results["models"].items():
        speed = " | ".join(format_number(s["us_per_atom"], 1) for s in entry["efficiency"]["structures"])
        drift = " | ".join(
            ("failed" if s["phi"] is None else f"{s['phi']:.1e}") + f" ({s['index']:.2f})"
            for s in entry["instability"]["structures"]
        )
        lines.append(f"| {name} | {speed} | {drift} |")
    lines += ["", "Machine: " + "; ".join(
        f"{name}: {entry['machine']['processor']}, {entry['machine']['torch_threads']} torch thread(s), "
        f"load average {format_number(entry['machine']['load_average'][0], 1) if entry['machine']['load_average'] else '?'}"
        for name, entry in results["models"].items()), ""]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="sevenomni model (file, checkpoint, run directory or SevenNet shortcut)")
    what.add_argument("--calculator", metavar="MODULE:CALLABLE", help="any ASE calculator factory")
    parser.add_argument("--kwargs", default="{}", help="JSON keyword arguments for --calculator")
    parser.add_argument("--name", required=True, help="the model's name in the results")
    parser.add_argument("--data", default=str(DATA_ROOT / "tiny"), help="directory of test_*.extxyz")
    parser.add_argument("--device", default="cpu", help="device of a sevenomni model (default cpu)")
    parser.add_argument("--efficiency-structures", nargs="+", default=EFFICIENCY_STRUCTURES, metavar="SET:SOURCE")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per efficiency structure")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per efficiency structure")
    parser.add_argument("--md-structures", nargs="+", default=MD_STRUCTURES, metavar="SET:SOURCE")
    parser.add_argument("--md-steps", type=int, default=300, help="NVE steps of 1 fs per structure")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default=str(RESULTS / "lambench"),
                        help="output stem: <out>.json (merged by --name) and <out>.md")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    import torch

    args = parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.md_steps < 5:
        raise SystemExit("--repeats must be >= 1, --warmup >= 0 and --md-steps >= 5")
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    sets = load_sets(data)
    if args.model is not None:
        calculator_for, channels = sevenomni_calculators(args.model, args.device)
        described = {"model": args.model, "channels": channels}
    else:
        calculator_for = ase_calculator(args.calculator, json.loads(args.kwargs))
        described = {"calculator": args.calculator, "kwargs": json.loads(args.kwargs)}
    settings = {
        "data": os.path.relpath(data.resolve(), ROOT) if data.resolve().is_relative_to(ROOT) else str(data),
        "test_set_sizes": {name: len(structures) for name, structures in sets.items()},
        "domains": TEST_SETS,
        "efficiency_structures": list(args.efficiency_structures),
        "warmup": args.warmup,
        "repeats": args.repeats,
        "md_structures": list(args.md_structures),
        "md_steps": args.md_steps,
        "timestep_fs": 1.0,
        "temperature_K": 300.0,
    }
    entry = {**described, **evaluate(calculator_for, sets, settings), "machine": machine_info(torch_threads=args.threads, load_average=load_average()),
             "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_suffix(".json")
    results = json.loads(json_path.read_text()) if json_path.is_file() else {}
    if results.get("settings", settings) != settings:
        print(f"[lambench] settings differ from those in {json_path}; its other models are dropped", flush=True)
        results = {}
    results = {
        "description": "LAMBench-style metrics (LAMBench, arXiv:2504.19578) at laptop scale: see benchmarks/lambench.py.",
        "settings": settings,
        "models": {**results.get("models", {}), args.name: entry},
    }
    json_path.write_text(json.dumps(json_ready(results), indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    print(f"[lambench] wrote {json_path} and {out.with_suffix('.md')}")
    return results


if __name__ == "__main__":
    main()
