"""LAMBench-style metrics (seed 003; LAMBench, arXiv:2504.19578) for a sevenomni model or any ASE calculator.

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
import platform
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.io import read
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet
from ase.stress import voigt_6_to_full_3x3_stress

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from sevenomni.analysis.report import json_ready  # noqa: E402

# test set -> domain
TEST_SETS = {
    "test_crystal_gfn1": "inorganic crystals",
    "test_molecule_gfn2": "small molecules",
    "test_molecule_gfn1": "small molecules",
}
WEIGHTS = {"energy": 0.5, "forces": 0.5}
WEIGHTS_WITH_VIRIAL = {"energy": 0.45, "forces": 0.45, "virial": 0.1}
ETA_REFERENCE_US = 100.0  # µs/atom
PHI_TOLERANCE = 5e-4  # eV/atom/ps
FAILED_INDEX = 5.0
FAILED_SLOPE = 50.0  # eV/atom/ps
EFFICIENCY_STRUCTURES = ["test_crystal_gfn1:Si_diamond", "test_crystal_gfn1:MgO_rocksalt"]
MD_STRUCTURES = ["test_crystal_gfn1:Si_diamond", "test_crystal_gfn1:MgO_rocksalt", "test_molecule_gfn2:C5H8"]

CalculatorFor = Callable[[str], Calculator]  # test-set name -> the calculator to use on it


# ---------------------------------------------------------------------------------- data


def load_sets(data_dir: Path) -> dict[str, list[Atoms]]:
    sets = {}
    for name in TEST_SETS:
        path = Path(data_dir) / f"{name}.extxyz"
        if not path.is_file():
            raise SystemExit(f"{path}: missing (generate it with scripts/make_multifidelity_data.py)")
        sets[name] = read(path, ":")
    return sets


def pick(sets: dict[str, list[Atoms]], spec: str) -> tuple[str, Atoms]:
    """``SET:SOURCE`` -> (set name, the set's first structure of that source)."""
    set_name, _, source = spec.partition(":")
    if set_name not in sets:
        raise SystemExit(f"{spec}: unknown test set {set_name!r}; one of {list(sets)}")
    for atoms in sets[set_name]:
        if atoms.info.get("source") == source:
            return set_name, atoms.copy()
    sources = sorted({a.info.get("source") for a in sets[set_name]})
    raise SystemExit(f"{spec}: no structure of source {source!r} in {set_name}; sources: {sources}")


def virial_per_atom(stress_voigt: np.ndarray, atoms: Atoms) -> np.ndarray:
    """-σ·V / N as a 3×3 (eV/atom) from an ASE-sign Voigt stress (eV/Å³)."""
    return -voigt_6_to_full_3x3_stress(np.asarray(stress_voigt)) * atoms.get_volume() / len(atoms)


def composition_counts(structures: Sequence[Atoms]) -> np.ndarray:
    return np.array([np.bincount(a.numbers, minlength=119) for a in structures], dtype=float)


def least_squares_residual(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` minus their least-squares fit on element counts (per-element references)."""
    coefficients, *_ = np.linalg.lstsq(counts, values, rcond=None)
    return values - counts @ coefficients


def rmse(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


# ---------------------------------------------------------------------------------- accuracy


def predict_all(calculator: Calculator, structures: Sequence[Atoms]) -> list[dict]:
    predictions = []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = calculator
        result = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if "REF_stress" in atoms.info:
            result["stress"] = atoms.get_stress()
        predictions.append(result)
    return predictions


def force_field_errors(structures: Sequence[Atoms], predictions: Sequence[dict]) -> dict:
    """RMSEs of the model (energies bias-adjusted) and of the composition-only dummy, and their
    ratios capped at 1: energy per atom (eV/atom), force components (eV/Å), virial per atom (eV/atom)."""
    sizes = np.array([len(a) for a in structures], dtype=float)
    counts = composition_counts(structures)
    labels = np.array([a.info["REF_energy"] for a in structures])
    predicted = np.array([p["energy"] for p in predictions])
    model = {"energy": rmse(least_squares_residual(counts, predicted - labels) / sizes)}
    dummy = {"energy": rmse(least_squares_residual(counts, labels) / sizes)}
    reference_forces = np.concatenate([a.arrays["REF_forces"].ravel() for a in structures])
    predicted_forces = np.concatenate([np.asarray(p["forces"]).ravel() for p in predictions])
    model["forces"] = rmse(predicted_forces - reference_forces)
    dummy["forces"] = rmse(reference_forces)
    with_stress = [(a, p) for a, p in zip(structures, predictions) if "REF_stress" in a.info]
    if with_stress:
        reference = np.array([virial_per_atom(a.info["REF_stress"], a) for a, _ in with_stress])
        predicted = np.array([virial_per_atom(p["stress"], a) for a, p in with_stress])
        model["virial"] = rmse(predicted - reference)
        dummy["virial"] = rmse(reference)
    normalized = {key: min(model[key] / dummy[key], 1.0) if dummy[key] > 0 else math.nan for key in model}
    return {"structures": len(structures), "model_rmse": model, "dummy_rmse": dummy, "normalized": normalized}


def force_field_metric(per_set: dict[str, dict]) -> dict:
    """Per domain: geometric mean over its sets per type, weighted over types; M_FF = domain mean."""
    domains = {}
    for domain in dict.fromkeys(TEST_SETS.values()):
        members = [per_set[name]["normalized"] for name, d in TEST_SETS.items() if d == domain and name in per_set]
        if not members:
            continue
        weights = WEIGHTS_WITH_VIRIAL if any("virial" in m for m in members) else WEIGHTS
        by_type = {kind: float(np.exp(np.mean([np.log(m[kind]) for m in members if kind in m]))) for kind in weights}
        combined = sum(weights[k] * by_type[k] for k in weights) / sum(weights.values())
        domains[domain] = {"by_type": by_type, "weights": weights, "M": combined}
    return {"domains": domains, "M_FF": float(np.mean([d["M"] for d in domains.values()]))}


# ---------------------------------------------------------------------------------- efficiency


def replicate(atoms: Atoms, low: int = 800, high: int = 1000) -> tuple[Atoms, tuple[int, int, int]]:
    """The most cubic supercell of ``atoms`` with between ``low`` and ``high`` atoms (most atoms first)."""
    lengths = atoms.cell.lengths()
    best = None
    for a in range(1, 21):
        for b in range(1, 21):
            for c in range(1, 21):
                size = len(atoms) * a * b * c
                if not low <= size <= high:
                    continue
                extent = lengths * (a, b, c)
                key = (-size, extent.max() / extent.min())
                if best is None or key < best[0]:
                    best = (key, (a, b, c))
    if best is None:
        raise ValueError(f"{atoms.get_chemical_formula()}: no supercell with {low}–{high} atoms")
    return atoms.repeat(best[1]), best[1]


def time_call(atoms: Atoms, calculator: Calculator, seed: int) -> float:
    """Seconds for energy + forces + stress of a freshly rattled copy."""
    atoms = atoms.copy()
    atoms.rattle(0.01, seed=seed)
    atoms.calc = calculator
    start = time.perf_counter()
    atoms.get_potential_energy()
    atoms.get_forces()
    atoms.get_stress()
    return time.perf_counter() - start


def efficiency(calculator_for: CalculatorFor, sets: dict, specs: Sequence[str], warmup: int, repeats: int) -> dict:
    structures = []
    for spec in specs:
        set_name, atoms = pick(sets, spec)
        big, replication = replicate(atoms)
        calculator = calculator_for(set_name)
        for seed in range(warmup):
            time_call(big, calculator, seed)
        seconds = [time_call(big, calculator, warmup + seed) for seed in range(repeats)]
        per_atom = [1e6 * s / len(big) for s in seconds]
        structures.append({
            "structure": spec, "atoms": len(big), "replication": list(replication),
            "seconds": seconds, "us_per_atom": float(np.mean(per_atom)),
        })
        print(f"[lambench] efficiency {spec} ×{replication} = {len(big)} atoms: {np.mean(per_atom):.1f} µs/atom",
              flush=True)
    eta = float(np.mean([s["us_per_atom"] for s in structures]))
    return {"structures": structures, "us_per_atom": eta, "M_E": ETA_REFERENCE_US / eta}


# ---------------------------------------------------------------------------------- instability


def instability_index(phi: float | None) -> float:
    """max(0, log10(Φ / Φ_tol)); 5 for a failed run (None, non-finite or Φ ≥ 50 eV/atom/ps)."""
    if phi is None or not math.isfinite(phi) or phi >= FAILED_SLOPE:
        return FAILED_INDEX
    return max(0.0, math.log10(phi / PHI_TOLERANCE)) if phi > 0 else 0.0


def nve_drift(atoms: Atoms, calculator: Calculator, steps: int, timestep_fs: float = 1.0,
              temperature_K: float = 300.0) -> dict:
    """Run NVE and fit the energy drift; ``phi`` None if the run failed."""
    atoms = atoms.copy()
    atoms.calc = calculator
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=np.random.default_rng(0))
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)
    dynamics = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    energies = []

    def record() -> None:
        energy = atoms.get_total_energy()
        if not math.isfinite(energy) or abs(energy) > 1e10:
            raise FloatingPointError(f"total energy {energy} at step {dynamics.nsteps}")
        energies.append(energy)

    dynamics.attach(record, interval=1)
    start, error = time.perf_counter(), None
    try:
        dynamics.run(steps)
    except Exception as failure:  # noqa: BLE001 - any failure of the simulation is a blow-up
        error = f"{type(failure).__name__}: {failure}"
    seconds = time.perf_counter() - start
    phi = None
    if error is None and len(energies) > 2:
        times_ps = np.arange(len(energies)) * timestep_fs / 1000.0
        keep = slice(int(0.2 * len(energies)), None)
        slope = np.polyfit(times_ps[keep], np.array(energies)[keep], 1)[0]
        phi = abs(float(slope)) / len(atoms)
    return {
        "atoms": len(atoms), "steps_done": int(dynamics.nsteps), "seconds": seconds, "phi": phi,
        "index": instability_index(phi), "error": error,
        "energy_first_last": [energies[0], energies[-1]] if energies else None,
    }


def instability(calculator_for: CalculatorFor, sets: dict, specs: Sequence[str], steps: int) -> dict:
    structures = []
    for spec in specs:
        set_name, atoms = pick(sets, spec)
        result = {"structure": spec, **nve_drift(atoms, calculator_for(set_name), steps)}
        structures.append(result)
        phi = "failed" if result["phi"] is None else f"Φ = {result['phi']:.2e} eV/atom/ps"
        print(f"[lambench] NVE {spec} ({result['atoms']} atoms, {steps} steps): {phi}, index {result['index']:.2f}",
              flush=True)
    return {"structures": structures, "M_IS": float(np.mean([s["index"] for s in structures]))}


# ---------------------------------------------------------------------------------- calculators


def sevenomni_calculators(model: str, device: str) -> tuple[CalculatorFor, dict[str, str]]:
    """One SevenOmniCalculator per task; each test set on the channel its name names."""
    from sevenomni import SevenOmniCalculator, load_model
    from sevenomni.analysis.evaluate import infer_own_task

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
        per_set[name] = force_field_errors(structures, predict_all(calculator_for(name), structures))
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


def machine_info(threads: int) -> dict:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": threads,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


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
    parser.add_argument("--data", default=str(ROOT / "recipes" / "data" / "tiny"), help="directory of test_*.extxyz")
    parser.add_argument("--device", default="cpu", help="device of a sevenomni model (default cpu)")
    parser.add_argument("--efficiency-structures", nargs="+", default=EFFICIENCY_STRUCTURES, metavar="SET:SOURCE")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per efficiency structure")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per efficiency structure")
    parser.add_argument("--md-structures", nargs="+", default=MD_STRUCTURES, metavar="SET:SOURCE")
    parser.add_argument("--md-steps", type=int, default=300, help="NVE steps of 1 fs per structure")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lambench"),
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
    entry = {**described, **evaluate(calculator_for, sets, settings), "machine": machine_info(args.threads),
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
