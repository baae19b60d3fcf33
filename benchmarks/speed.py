"""Speed of sevenomni beside SevenNet on identical models: inference, MD, training, and (on a GPU) large cells.

CPU (always): 7net-0 imported into sevenomni (so both evaluate the same weights) on diamond Si of
8 to 512 atoms and on ethanol — inference ms per energy+forces+stress call and ASE VelocityVerlet
(1 fs) steps/s — and force training (energy + forces MSE, Adam) on a batch of the bundled
multi-fidelity data. sevenomni runs as e3nn eager, e3nn compiled and, on small cells, cuEquivariance
(its PyTorch fallback on CPU); SevenNet through its own calculator and model. Repetitions are
interleaved (one call of every variant per round), so a change in the machine's load hits all alike;
the load average is recorded beside each case.

GPU (when CUDA is present): the 7net-Omni size (128 channels, lmax 3, 5 layers, 6 Å cutoff) with
random weights built by SevenNet and imported, diamond Si from 1,000 to 21,952 atoms, sevenomni e3nn
vs cueq vs SevenNet (e3nn and cuEquivariance), ms/call and ns/day; and force training of 7net-0 on
a larger batch of the bundled data, as on the CPU.

``python benchmarks/speed.py`` writes ``benchmarks/results/speed.{json,md,png}``;
``python benchmarks/speed.py --gpu-only`` runs the GPU cases alone into ``speed_gpu.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import platform
import signal
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.build import bulk, molecule
from ase.io import read
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

import sevenomni
from sevenomni.core.devices import use_tf32
from sevenomni.data.graph import atoms_to_graph, collate
from sevenomni.experiments.labels import reference
from sevenomni.model_io.sevenn.convert import sevenn_to_model
from sevenomni.model_io.sevenn.files import read_sevenn_checkpoint, resolve_sevenn_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT / "recipes" / "data" / "tiny"
NS_PER_DAY_PER_STEP_PER_S = 86400 * 1e-6  # 1 fs steps


def silicon(repeat: int) -> "ase.Atoms":  # noqa: F821
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((repeat,) * 3)
    atoms.rattle(0.03, seed=repeat)
    return atoms


def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.03, seed=0)
    return atoms


def load() -> float:
    return round(os.getloadavg()[0], 2)


def finish_device_work(device: str) -> None:
    """Wait for queued GPU kernels, so a wall-clock interval covers the work it launched."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# Every warm-up call as it finishes (variant, case, seconds or out of memory): printed at once and kept
# in the report, so a run stopped by its time limit still says where its time went.
WARMUPS: list[dict] = []


def note_warmup(case: str, name: str, seconds: float | None, error: str | None = None) -> None:
    entry = {"case": case, "variant": name, "seconds": None if seconds is None else round(seconds, 2)}
    if error:
        entry["error"] = error
    WARMUPS.append(entry)
    print(f"  warm-up {case} / {name}: " + (error or f"{seconds:.1f} s"), flush=True)


def is_out_of_memory(error: Exception) -> bool:
    """torch's OutOfMemoryError, or a kernel library's failed CUDA allocation (a plain RuntimeError)."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def summary(times: list[float]) -> dict:
    return {
        "median": statistics.median(times),
        "min": min(times),
        "max": max(times),
        "n": len(times),
    }


# ------------------------------------------------------------------------------------ variants
def sevenn_calculator(device: str):
    from sevenn.calculator import SevenNetCalculator

    return SevenNetCalculator("7net-0", device=device)


def sevenomni_calculator(model, device: str, tp_backend: str, compiled: bool):
    return sevenomni.SevenOmniCalculator(model, device=device, tp_backend=tp_backend, compile=compiled)


def inference_variants(model, device: str, cueq: bool, compiled: bool) -> dict:
    variants = {
        "sevenomni e3nn": sevenomni_calculator(model, device, "e3nn", False),
        "SevenNet": sevenn_calculator(device),
    }
    if compiled:
        variants["sevenomni e3nn compiled"] = sevenomni_calculator(model, device, "e3nn", True)
    if cueq:
        variants["sevenomni cueq"] = sevenomni_calculator(model, device, "cueq", False)
    return variants


def time_calls(variants: dict, atoms, rounds: int, warmup: int = 1, case: str = "") -> dict:
    """ms per energy+forces+stress call, rounds interleaved over variants.

    A variant that runs out of GPU memory on its warm-up call is left out of the rounds and
    reported as ``{"out_of_memory": message}``, so one variant's limit does not lose the others'.
    """
    copies = {name: atoms.copy() for name in variants}
    first, failed = {}, {}
    for name, calc in variants.items():
        copies[name].calc = calc
        start = time.perf_counter()
        try:
            for _ in range(warmup):
                calc.calculate(copies[name], ["energy", "forces", "stress"])
        except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
            if not is_out_of_memory(error):
                raise
            failed[name] = {"out_of_memory": str(error).splitlines()[0]}
        if name in failed:  # the failed call's frames are released by now: its memory can be returned
            note_warmup(case, name, None, "out of memory")
            gc.collect()
            torch.cuda.empty_cache()
            continue
        first[name] = (time.perf_counter() - start) * 1e3
        note_warmup(case, name, first[name] / 1e3)
    times = {name: [] for name in first}
    for _ in range(rounds):
        for name in first:
            start = time.perf_counter()
            variants[name].calculate(copies[name], ["energy", "forces", "stress"])
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: summary(t) | {"first_call": first[name]} for name, t in times.items()} | failed


def time_md(variants: dict, atoms, steps: int, rounds: int) -> dict:
    """VelocityVerlet (1 fs) steps/s: rounds of ``steps`` steps, interleaved over variants."""
    runs = {}
    for name, calc in variants.items():
        moving = atoms.copy()
        MaxwellBoltzmannDistribution(moving, temperature_K=300, rng=np.random.default_rng(0))
        moving.calc = calc
        runs[name] = VelocityVerlet(moving, timestep=1.0 * units.fs)
        runs[name].run(1)  # warm-up (and, compiled, the first call)
    rates = {name: [] for name in variants}
    for _ in range(rounds):
        for name, dynamics in runs.items():
            start = time.perf_counter()
            dynamics.run(steps)
            rates[name].append(steps / (time.perf_counter() - start))
    return {name: summary(r) for name, r in rates.items()}


# ------------------------------------------------------------------------------------ training
def training_batch(size: int):
    structures = read(DATA / "crystal_gfn1.extxyz", index=":") + read(DATA / "molecule_gfn2.extxyz", index=":")
    picked = [structures[i] for i in np.random.default_rng(0).choice(len(structures), size, replace=False)]
    labels = reference(picked)
    return list(zip(picked, labels["energy"], labels["forces"]))


def sevenomni_step(model, batch, device, tf32: bool = False):
    """One force-training step of ``model`` on ``batch``; ``tf32`` switches TF32 on for this step only."""
    graphs = []
    for atoms, _, _ in batch:
        graph = atoms_to_graph(atoms, model.cutoff)
        graph.task = torch.tensor([0])
        graphs.append(graph)
    data = model.attach_species(collate(graphs)).to(device)
    energy = torch.tensor([e for _, e, _ in batch], device=device, dtype=model.dtype)
    forces = torch.tensor(np.concatenate([f for _, _, f in batch]), device=device, dtype=model.dtype)

    def step(optimizer):
        use_tf32(tf32)
        out = model(data, compute_stress=False, create_graph=True)
        loss = (out["energy"] - energy).square().mean() + (out["forces"] - forces).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        use_tf32(False)

    return step


def sevenn_step(model, batch, device, cutoff):
    from sevenn import _keys as KEY
    from sevenn.atom_graph_data import AtomGraphData
    from sevenn.train.dataload import unlabeled_atoms_to_graph
    from torch_geometric.data import Batch

    data = Batch.from_data_list(
        [AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(atoms, cutoff, with_shift=False)) for atoms, _, _ in batch]
    ).to(device)
    energy = torch.tensor([e for _, e, _ in batch], device=device)
    forces = torch.tensor(np.concatenate([f for _, _, f in batch]), device=device, dtype=torch.float32)

    def step(optimizer):
        out = model(data.clone())
        loss = (out[KEY.PRED_TOTAL_ENERGY] - energy).square().mean() + (out[KEY.PRED_FORCE] - forces).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def quickstart_size_model(batch) -> "sevenomni.SevenOmniModel":  # noqa: F821
    """The quickstart recipe's model size (16 channels, lmax 2, 3 layers, 4 Å), random weights."""
    from sevenomni.nn import ModelConfig, SevenOmniModel

    elements = sorted({s for atoms, _, _ in batch for s in atoms.get_chemical_symbols()})
    config = ModelConfig(
        channels=16, lmax=2, num_layers=3, cutoff=4.0, radial_mlp=[32, 32], self_connection="linear",
        tasks=["gfn1"], elements=elements, avg_num_neighbors=10.0, tp_backend="e3nn",
    )
    torch.manual_seed(0)
    return SevenOmniModel(config)


def time_training(device: str, batch_size: int, rounds: int, gpu_variants: bool = False) -> dict:
    """Structures/s of force-training steps: 7net-0 (sevenomni e3nn and cueq, SevenNet; on a GPU also
    SevenNet with cuEquivariance) and, with ``gpu_variants``, sevenomni cueq with the opt-in reduced
    precisions (bf16 radial networks, TF32 matmuls) and sevenomni at the quickstart recipe's size
    (e3nn and cueq)."""
    from sevenn.model_build import build_E3_equivariant_model
    from sevenn.util import model_from_checkpoint

    batch = training_batch(batch_size)
    theirs, config = model_from_checkpoint(str(resolve_sevenn_checkpoint("7net-0")))
    models = {"sevenomni e3nn": sevenomni.load_model("7net-0", tp_backend="e3nn")}
    models["sevenomni cueq"] = copy.deepcopy(models["sevenomni e3nn"]).set_tp_backend("cueq")
    tf32 = set()
    if gpu_variants:
        models["sevenomni cueq bf16-radial"] = copy.deepcopy(models["sevenomni cueq"]).set_radial_precision("bfloat16")
        models["sevenomni cueq tf32"] = copy.deepcopy(models["sevenomni cueq"])
        tf32.add("sevenomni cueq tf32")
        models["sevenomni quickstart-size e3nn"] = quickstart_size_model(batch)
        models["sevenomni quickstart-size cueq"] = copy.deepcopy(models["sevenomni quickstart-size e3nn"]).set_tp_backend("cueq")
    steps = {}
    for name, model in models.items():
        model = model.to(device).train()
        step = sevenomni_step(model, batch, device, tf32=name in tf32)
        steps[name] = (step, torch.optim.Adam(model.parameters(), lr=1e-6))
    references = {"SevenNet": theirs}
    if torch.device(device).type == "cuda":
        theirs_cueq = build_E3_equivariant_model({**copy.deepcopy(config), "cuequivariance_config": {"use": True}})
        theirs_cueq.load_state_dict(theirs.state_dict(), strict=False)
        references["SevenNet cueq"] = theirs_cueq
    for name, model in references.items():
        model = model.to(device).train()
        steps[name] = (sevenn_step(model, batch, device, config["cutoff"]), torch.optim.Adam(model.parameters(), lr=1e-6))
    for name, (step, optimizer) in steps.items():
        start = time.perf_counter()
        step(optimizer)
        finish_device_work(device)
        note_warmup(f"training {batch_size}", name, time.perf_counter() - start)
    rates = {name: [] for name in steps}
    for _ in range(rounds):
        for name, (step, optimizer) in steps.items():
            finish_device_work(device)
            start = time.perf_counter()
            step(optimizer)
            finish_device_work(device)
            rates[name].append(batch_size / (time.perf_counter() - start))
    atoms = sum(len(a) for a, _, _ in batch)
    return {
        "batch_structures": batch_size,
        "batch_atoms": atoms,
        "structures_per_s": {n: summary(r) for n, r in rates.items()},
        "note": "train.compile is not timed: force training needs a double backward, so it runs eagerly; "
        "the quickstart-size variants have no SevenNet counterpart (compare them with each other)",
    }


# ------------------------------------------------------------------------------------ GPU
OMNI = dict(channel=128, lmax=3, num_convolution_layer=5, cutoff=6.0, is_parity=True)


def omni_size_models(device: str):
    """SevenNet at the 7net-Omni size with random weights (e3nn and cuEquivariance), and the same imported."""
    from sevenn.model_build import build_E3_equivariant_model

    checkpoint = read_sevenn_checkpoint(resolve_sevenn_checkpoint("7net-l3i5"))
    config = {**checkpoint["config"], **OMNI}
    config["irreps_manual"] = False
    torch.manual_seed(0)
    theirs = build_E3_equivariant_model(copy.deepcopy(config))
    ours = sevenn_to_model({"config": config, "model_state_dict": theirs.state_dict()}, source="7net-Omni size")
    cue_config = {**config, "cuequivariance_config": {"use": True}}
    theirs_cueq = build_E3_equivariant_model(copy.deepcopy(cue_config))
    theirs_cueq.load_state_dict(theirs.state_dict(), strict=False)
    return ours, theirs, theirs_cueq


def inference_case(variants: dict, repeat: int, rounds: int, device: str) -> dict:
    atoms = silicon(repeat)
    finish_device_work(device)
    system = f"Si {len(atoms)}"
    times = time_calls(variants, atoms, rounds, case=system)
    case = {
        "kind": "gpu inference",
        "system": system,
        "atoms": len(atoms),
        "ms_per_call": times,
        "ns_per_day": {n: NS_PER_DAY_PER_STEP_PER_S * 1e3 / t["median"] for n, t in times.items() if "median" in t},
        "load": load(),
    }
    print(system, {n: round(t["median"], 1) if "median" in t else "OOM" for n, t in times.items()}, flush=True)
    for name in [n for n, t in times.items() if "out_of_memory" in t]:
        del variants[name]  # a variant out of memory here cannot fit a larger cell either
    return case


def gpu_cases(args, deadline: float, device: str = "cuda"):
    """The GPU cases, each yielded as it is measured: inference on the first cell size, the training
    case, inference on the larger cells, then (with ``--gpu-compiled``) compiled cueq on the first
    size. No case starts after ``deadline`` (a ``time.perf_counter()`` value); the cells stop growing
    when every variant has run out of memory. ``device``: cuda (cpu to test the script)."""
    from sevenn.calculator import SevenNetCalculator

    ours, theirs, theirs_cueq = omni_size_models(device)
    variants = {
        "sevenomni e3nn": sevenomni_calculator(ours, device, "e3nn", False),
        "sevenomni cueq": sevenomni_calculator(ours, device, "cueq", False),
        "SevenNet e3nn": SevenNetCalculator(theirs.to(device), file_type="model_instance", device=device),
        "SevenNet cueq": SevenNetCalculator(theirs_cueq.to(device), file_type="model_instance", device=device),
    }
    first, *larger = args.gpu_repeats
    yield inference_case(variants, first, args.rounds, device)
    if time.perf_counter() < deadline:
        yield training_case(device, args.gpu_train_batch, args.rounds, gpu_variants=True)
    for repeat in larger:
        if not variants or time.perf_counter() >= deadline:
            break
        yield inference_case(variants, repeat, args.rounds, device)
    if args.gpu_compiled and time.perf_counter() < deadline:
        compiled = {
            "sevenomni cueq": sevenomni_calculator(ours, device, "cueq", False),
            "sevenomni cueq compiled": sevenomni_calculator(ours, device, "cueq", True),
            "SevenNet cueq": variants.get("SevenNet cueq") or SevenNetCalculator(theirs_cueq.to(device), file_type="model_instance", device=device),
        }
        case = inference_case(compiled, first, args.rounds, device)
        yield case | {"kind": "gpu inference (compiled)"}


# ------------------------------------------------------------------------------------ report
def reference_of(name: str, names) -> str | None:
    """The SevenNet variant a sevenomni variant is compared with: the same backend where both ran it
    ("sevenomni cueq" → "SevenNet cueq"), else plain "SevenNet"."""
    words = name.split()[1:]
    for k in range(len(words), 0, -1):
        if (candidate := "SevenNet " + " ".join(words[:k])) in names:
            return candidate
    return "SevenNet" if "SevenNet" in names else None


def ratio(case_values: dict, key: str = "median") -> dict:
    """sevenomni variant / its SevenNet reference (time ratios: < 1 is faster; rate ratios: > 1 is faster)."""
    timed = {name: values for name, values in case_values.items() if key in values}
    return {
        name: values[key] / timed[reference][key]
        for name, values in timed.items()
        if name.startswith("sevenomni") and (reference := reference_of(name, timed)) is not None
    }


def write_markdown(report: dict, path: Path) -> None:
    lines = [
        "# sevenomni vs SevenNet speed",
        "",
        f"Machine: {report['machine']['cpu']} ({report['machine']['cores']} cores), torch "
        f"{report['machine']['torch']}, {report['machine']['threads']} thread(s); GPU: {report['machine']['gpu'] or 'none'}.",
        f"Started {report['started']}, {report['seconds']:.0f} s. Load average (1 min) recorded per case.",
        "",
        "| case | variant | median | range | vs SevenNet | first call | load |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for case in report["cases"]:
        unit, values, better = (
            ("ms/call", case["ms_per_call"], "lower")
            if "ms_per_call" in case
            else ("steps/s", case["steps_per_s"], "higher")
            if "steps_per_s" in case
            else ("structures/s", case["structures_per_s"], "higher")
        )
        for name, value in values.items():
            if "out_of_memory" in value:
                lines.append(f"| {case['kind']} {case['system']} | {name} | out of memory | | | | {case['load']} |")
                continue
            r = case["ratio_to_sevenn"].get(name)
            first = f"{value['first_call'] / 1e3:.1f} s" if "first_call" in value else ""
            lines.append(
                f"| {case['kind']} {case['system']} | {name} | {value['median']:.4g} {unit} | "
                f"{value['min']:.4g}–{value['max']:.4g} | {'' if r is None else f'{r:.2f}×'} | {first} | {case['load']} |"
            )
    lines += [
        "",
        "Ratios are sevenomni / SevenNet of the medians (on the GPU, SevenNet with the same backend): for",
        "ms/call below 1 is faster, for rates above 1.",
        "First call: the warm-up call of each calculator (compiled: includes compilation, or loading it from",
        "the in-process/on-disk cache). cueq on CPU is cuEquivariance's PyTorch fallback.",
    ]
    if report.get("stopped"):
        lines += ["", f"**Stopped before the last case**: {report['stopped']}."]
    if report.get("warmups"):
        lines += ["", "Warm-up calls in order (kernel compilation and planning show here):", "",
                  "| case | variant | warm-up |", "| --- | --- | --- |"]
        for warmup in report["warmups"]:
            took = warmup.get("error") or f"{warmup['seconds']:.1f} s"
            lines.append(f"| {warmup['case']} | {warmup['variant']} | {took} |")
    path.write_text("\n".join(lines) + "\n")


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    md = [c for c in report["cases"] if c["kind"] == "md" and c["system"].startswith("Si")]
    figure, axis = plt.subplots(figsize=(6, 4))
    names = sorted({n for c in md for n in c["steps_per_s"]})
    for name in names:
        points = [(c["atoms"], c["steps_per_s"][name]["median"] * NS_PER_DAY_PER_STEP_PER_S) for c in md if name in c["steps_per_s"]]
        axis.plot(*zip(*points), marker="o", label=name)
    gpu = [c for c in report["cases"] if c["kind"] == "gpu inference"]
    for name in sorted({n for c in gpu for n in c["ns_per_day"]}):
        points = [(c["atoms"], c["ns_per_day"][name]) for c in gpu if name in c["ns_per_day"]]
        axis.plot(*zip(*points), marker="x", linestyle="--", label=f"GPU {name}")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("atoms (diamond Si)")
    axis.set_ylabel("ns/day (1 fs steps)")
    title = "MD speed, 7net-0 weights, CPU" if md else ""
    if gpu:
        title += ("; " if title else "") + f"GPU inference, 7net-Omni size ({report['machine']['gpu']})"
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def training_case(device: str, batch_size: int, rounds: int, gpu_variants: bool = False) -> dict:
    """The training case; ``gpu_variants`` adds the GPU-only variants (also on the CPU with --gpu-smoke)."""
    before = load()
    training = time_training(device, batch_size, rounds, gpu_variants=gpu_variants)
    system = f"{training['batch_structures']} structures, {training['batch_atoms']} atoms"
    kind = "training" if device == "cpu" else f"{device} training"
    print(kind, {n: round(r["median"], 2) for n, r in training["structures_per_s"].items()}, flush=True)
    return {"kind": kind, "system": system, **training, "load": [before, load()]}


def cpu_cases(args) -> list[dict]:
    model = sevenomni.load_model("7net-0", tp_backend="e3nn")
    cases = []
    systems = [(f"Si {8 * r**3}", silicon(r)) for r in args.repeats] + [("ethanol", ethanol())]
    for system, atoms in systems:
        variants = inference_variants(model, "cpu", len(atoms) <= args.cueq_max_atoms, not args.skip_compiled)
        rounds = max(2, args.rounds // 2) if len(atoms) > 200 else args.rounds
        before = load()
        times = time_calls(variants, atoms, rounds)
        cases.append({"kind": "inference", "system": system, "atoms": len(atoms), "ms_per_call": times, "load": [before, load()]})
        rates = time_md(variants, atoms, args.md_steps, rounds)
        cases.append({"kind": "md", "system": system, "atoms": len(atoms), "steps_per_s": rates, "load": [before, load()]})
        print(system, {n: round(t["median"], 1) for n, t in times.items()}, {n: round(r["median"], 2) for n, r in rates.items()}, flush=True)
    cases.append(training_case("cpu", args.train_batch, args.rounds))
    return cases


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, nargs="+", default=[1, 2, 3, 4], help="Si cubic cells per axis (8 n³ atoms)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--md-steps", type=int, default=3)
    parser.add_argument("--skip-compiled", action="store_true", help="leave out the compiled variant (quick checks)")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cueq-max-atoms", type=int, default=512, help="largest cell for the CPU cueq fallback")
    parser.add_argument("--gpu-repeats", type=int, nargs="+", default=[5, 8, 11, 14])
    parser.add_argument("--gpu-train-batch", type=int, default=64)
    parser.add_argument("--gpu-only", action="store_true", help="the GPU cases alone (default output speed_gpu)")
    parser.add_argument("--gpu-compiled", action="store_true", help="also time the compiled cueq calculator on the GPU")
    parser.add_argument("--budget", type=float, default=None, help="seconds: no GPU case starts after this (default: no limit)")
    parser.add_argument("--gpu-smoke", action="store_true", help="run the GPU cases on the CPU with small cells (tests the script)")
    parser.add_argument("--out", type=Path, default=None, help="output path without suffix (default results/speed)")
    args = parser.parse_args(argv)
    args.out = args.out or RESULTS / ("speed_gpu" if args.gpu_only else "speed")

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    started, clock = time.strftime("%Y-%m-%d %H:%M:%S"), time.perf_counter()
    deadline = clock + (args.budget if args.budget is not None else math.inf)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    if args.gpu_only and gpu is None and not args.gpu_smoke:
        raise SystemExit("--gpu-only: no CUDA device is visible to torch")
    signal.signal(signal.SIGTERM, stop_on_signal)  # `timeout` stops a run with SIGTERM: keep what it measured
    cases: list[dict] = []
    try:
        for case in measured_cases(args, gpu is not None, deadline):
            values = case.get("ms_per_call") or case.get("steps_per_s") or case.get("structures_per_s")
            case["ratio_to_sevenn"] = ratio(values)
            if case["kind"] == "md":
                case["ns_per_day"] = {n: v["median"] * NS_PER_DAY_PER_STEP_PER_S for n, v in values.items()}
            cases.append(case)
            write_report(args, cases, started, time.perf_counter() - clock, gpu)  # kept if a later case dies
    except Stopped as stop:
        write_report(args, cases, started, time.perf_counter() - clock, gpu, stopped=str(stop))
        raise SystemExit(f"speed.py: {stop}; the cases measured so far are in {args.out.with_suffix('.json')}")
    plot(write_report(args, cases, started, time.perf_counter() - clock, gpu), args.out.with_suffix(".png"))


class Stopped(Exception):
    """The run was told to stop (SIGTERM) before its last case."""


def stop_on_signal(signum, frame) -> None:
    raise Stopped(f"stopped by signal {signum} after {len(WARMUPS)} warm-up call(s)")


def measured_cases(args, on_gpu: bool, deadline: float = math.inf):
    """The benchmark's cases in order: CPU (unless --gpu-only), then the GPU cases (see gpu_cases)."""
    if not args.gpu_only:
        yield from cpu_cases(args)
    if args.gpu_smoke:
        yield from gpu_cases(args, deadline, device="cpu")
    elif on_gpu:
        yield from gpu_cases(args, deadline)


def write_report(args, cases: list[dict], started: str, seconds: float, gpu: str | None, stopped: str | None = None) -> dict:
    report = {
        "started": started,
        "seconds": seconds,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": args.threads,
            "torch": torch.__version__,
            "gpu": gpu,
            "load_at_end": list(os.getloadavg()),
        },
        "settings": vars(args) | {"out": str(args.out)},
        "model": "7net-0 (SevenNet checkpoint) and its sevenomni import; GPU: 7net-Omni size, random weights",
        "gpu_run": gpu is not None,
        "cases": cases,
        "warmups": WARMUPS,
        "stopped": stopped,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    write_markdown(report, args.out.with_suffix(".md"))
    return report


if __name__ == "__main__":
    main()
