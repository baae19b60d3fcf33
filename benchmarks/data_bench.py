"""Data-layer benchmark: ingest throughput, read + graph-build throughput, memory vs store size.

    python benchmarks/data_bench.py                    # full run (a few minutes on 2 cores)
    python benchmarks/data_bench.py --quick            # smaller sizes, for a smoke test

Writes ``<out>/data_bench.json`` and ``<out>/data_bench.md`` (default ``benchmarks/results``).

Measurements
* ingest: ``ingest()`` of N small periodic structures (2–8 atoms, energy/forces/stress) written as
  extxyz in 4 files, with 1 and 2 workers; and ``write_store`` alone (records already in memory).
* read: ``LMDBDataset`` + ``DataLoader`` (batch 32, cutoff 5 Å) over 8–32-atom crystals, with 0
  and 2 workers: structures/s including record decode, neighbour list and PyG collation (with
  workers, both with ``graph.collate`` and with ``dataset.worker_collate``).
* memory: for stores of 10^4, 10^5, 10^6 tiny structures (1–3 atoms), a fresh process opens the
  store, runs a full sampler epoch (max_atoms batches) over all of it, builds graphs for a fixed
  number of sampled structures through a 2-worker DataLoader, and reads every record once.
  Reported: peak anonymous RSS (the process's own memory: must stay flat) and peak total RSS
  (``VmHWM``; also counts the store's file pages mapped by LMDB, which the kernel can drop and
  which grow with how much of the store was touched).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SYMBOLS = ["H", "C", "N", "O", "Si"]


# -- helpers --------------------------------------------------------------------------------


def proc_status() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile in bytes (Linux)."""
    out = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


class PeakAnon:
    """Tracks the peak of RssAnon over explicit samples."""

    def __init__(self) -> None:
        self.peak = 0

    def sample(self) -> None:
        self.peak = max(self.peak, proc_status().get("RssAnon", 0))


def cpu_seconds() -> float:
    """CPU time of this process plus its finished children (user + system)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def write_extxyz_files(directory: Path, n: int, files: int, seed: int = 0) -> list[Path]:
    from sevenomni.data.readers.ase_files import DEFAULT_KEYS

    rng = np.random.default_rng(seed)
    energy_key, forces_key, stress_key = DEFAULT_KEYS  # the label keys ingestion reads by default
    paths = [directory / f"part{k}.extxyz" for k in range(files)]
    per_file = -(-n // files)
    written = 0
    for path in paths:
        lines = []
        for _ in range(min(per_file, n - written)):
            k = int(rng.integers(2, 9))
            lines.append(
                f'{k}\nLattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3:{forces_key}:R:3 '
                f'{energy_key}={rng.normal():.8f} {stress_key}="0.1 0.2 0.3 0.01 0.02 0.03" pbc="T T T"\n'
            )
            # distinct sites of a 3x3x3 grid, jittered: atoms stay > 0.6 Å apart (ingest rejects < 0.1 Å)
            sites = np.stack(np.unravel_index(rng.choice(27, size=k, replace=False), (3, 3, 3)), axis=1)
            positions, forces = (sites + rng.uniform(0.2, 0.8, (k, 3))) * 5 / 3, rng.normal(size=(k, 3))
            for j in range(k):
                p, f = positions[j], forces[j]
                lines.append(f"{SYMBOLS[j % 5]} {p[0]:.8f} {p[1]:.8f} {p[2]:.8f} {f[0]:.8f} {f[1]:.8f} {f[2]:.8f}\n")
            written += 1
        path.write_text("".join(lines))
    return paths


def tiny_records(n: int, seed: int = 0, min_atoms: int = 1, max_atoms: int = 3, box: float = 3.0):
    """Streams n random periodic records with energy and forces (generated in chunks)."""
    from sevenomni.data.store import Record

    rng = np.random.default_rng(seed)
    cell = np.eye(3) * box
    pbc = np.ones(3, dtype=bool)
    for start in range(0, n, 10_000):
        m = min(10_000, n - start)
        sizes = rng.integers(min_atoms, max_atoms + 1, m)
        numbers = rng.integers(1, 15, sizes.sum())
        positions = rng.random((sizes.sum(), 3)) * box
        forces = rng.normal(size=(sizes.sum(), 3))
        energies = rng.normal(size=m)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        for i in range(m):
            a, b = offsets[i], offsets[i + 1]
            yield Record(numbers=numbers[a:b], positions=positions[a:b], cell=cell, pbc=pbc,
                         energy=float(energies[i]), forces=forces[a:b], source="bench", index=start + i)


# -- sections -------------------------------------------------------------------------------


def bench_ingest(work: Path, n: int) -> dict:
    from sevenomni.data.ingest import ingest
    from sevenomni.data.store import write_store

    sources = work / "ingest_src"
    sources.mkdir()
    t = time.perf_counter()
    files = write_extxyz_files(sources, n, files=4)
    size_mb = sum(f.stat().st_size for f in files) / 2**20
    print(f"  wrote {n} extxyz structures ({size_mb:.0f} MiB) in {time.perf_counter() - t:.1f} s", flush=True)
    out = {"structures": n, "input_mib": round(size_mb, 1)}
    for workers in (1, 2):
        target = work / f"ingest_w{workers}"
        t, cpu = time.perf_counter(), cpu_seconds()
        report = ingest(files, target, workers=workers)
        elapsed, cpu = time.perf_counter() - t, cpu_seconds() - cpu
        assert report.count == n
        out[f"extxyz_workers{workers}_per_s"] = round(n / elapsed, 1)
        out[f"extxyz_workers{workers}_cpu_us_per_structure"] = round(1e6 * cpu / n, 1)
        print(f"  ingest extxyz, {workers} worker(s): {n / elapsed:.0f} structures/s, "
              f"{1e6 * cpu / n:.0f} CPU-µs/structure", flush=True)
        shutil.rmtree(target)
    records = list(tiny_records(n, min_atoms=2, max_atoms=8, box=5.0))
    t = time.perf_counter()
    write_store(records, work / "write_only")
    elapsed = time.perf_counter() - t
    out["write_store_per_s"] = round(n / elapsed, 1)
    print(f"  write_store only: {n / elapsed:.0f} structures/s", flush=True)
    shutil.rmtree(work / "write_only")
    shutil.rmtree(sources)
    return out


def bench_read(work: Path, n: int, cutoff: float = 5.0, batch_size: int = 32) -> dict:
    from ase.build import bulk
    from torch.utils.data import DataLoader

    from sevenomni.data.dataset import LMDBDataset, worker_collate
    from sevenomni.data.graph import collate
    from sevenomni.data.readers import validate_record
    from sevenomni.data.store import StoreReader, write_store

    rng = np.random.default_rng(1)
    shapes = [(1, 1, 1), (2, 1, 1), (2, 2, 1), (2, 2, 2)]  # 8..64 atoms; cubic diamond cell = 8

    def crystals():
        for i in range(n):
            atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(shapes[i % 3])
            atoms.rattle(0.05, seed=i)
            yield validate_record(source="bench", index=i, species=atoms.numbers, positions=atoms.positions,
                                  cell=atoms.cell.array, pbc=True, energy=float(rng.normal()),
                                  forces=rng.normal(size=(len(atoms), 3)), stress=rng.normal(size=6))

    path = work / "read_store"
    write_store(crystals(), path)
    reader = StoreReader(path)
    t = time.perf_counter()
    for i in range(len(reader)):
        reader.read(i)
    raw = len(reader) / (time.perf_counter() - t)
    mean_atoms = float(np.mean(reader.num_atoms))
    reader.close()
    out = {"structures": n, "mean_atoms": round(mean_atoms, 1), "cutoff": cutoff, "batch_size": batch_size,
           "raw_record_read_per_s": round(raw, 1)}
    print(f"  raw record reads: {raw:.0f}/s", flush=True)
    dataset = LMDBDataset(path, cutoff, 0, 0)
    runs = [("graphs_workers0", 0, collate), ("graphs_workers2", 2, collate),
            ("graphs_workers2_worker_collate", 2, worker_collate)]
    for key, workers, collate_fn in runs:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate_fn, num_workers=workers)
        t = time.perf_counter()
        count = edges = 0
        for batch in loader:
            count += batch.num_graphs
            edges += batch.edge_index.shape[1]
        rate = count / (time.perf_counter() - t)
        out[f"{key}_per_s"] = round(rate, 1)
        out["mean_edges_per_atom"] = round(edges / (mean_atoms * count), 1)
        print(f"  read + graph build + {collate_fn.__name__}, {workers} workers: {rate:.0f} structures/s", flush=True)
    shutil.rmtree(path)
    return out


def memory_child(path: str, graphs: int) -> None:
    """Run in a fresh process: open, sample an epoch, build graphs, scan; print JSON."""
    import torch
    from torch.utils.data import DataLoader

    from sevenomni.data.dataset import LMDBDataset, worker_collate
    from sevenomni.data.sampler import MultiDatabaseSampler
    from sevenomni.data.spec import SamplingSpec

    torch.set_num_threads(1)
    peak = PeakAnon()
    peak.sample()
    baseline = proc_status()
    result: dict = {"baseline_anon_mib": baseline["RssAnon"] / 2**20}
    t = time.perf_counter()
    dataset = LMDBDataset(path, 4.0, 0, 0)
    sampler = MultiDatabaseSampler([len(dataset)], [dataset.atom_counts], SamplingSpec(max_atoms=64, seed=0), None)
    batches = 0
    for batch in sampler:
        batches += 1
        if batches % 2000 == 0:
            peak.sample()
    peak.sample()
    result["sampler_epoch_s"] = time.perf_counter() - t
    result["sampler_batches"] = batches
    result["after_sampler_anon_mib"] = proc_status()["RssAnon"] / 2**20

    sampler = MultiDatabaseSampler([len(dataset)], [dataset.atom_counts],
                                   SamplingSpec(max_atoms=64, seed=1, epoch_size=graphs), None)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=worker_collate, num_workers=2)
    t = time.perf_counter()
    built = 0
    for batch in loader:
        built += batch.num_graphs
        peak.sample()
    result["graphs_built"] = built
    result["graph_phase_s"] = time.perf_counter() - t
    result["after_graphs_anon_mib"] = proc_status()["RssAnon"] / 2**20

    reader = dataset.readers[0]
    t = time.perf_counter()
    for i in range(len(reader)):
        reader.read(i)
        if i % 20_000 == 0:
            peak.sample()
    peak.sample()
    result["full_scan_s"] = time.perf_counter() - t
    status = proc_status()
    result["after_scan_anon_mib"] = status["RssAnon"] / 2**20
    result["peak_anon_mib"] = peak.peak / 2**20
    result["peak_rss_mib"] = status["VmHWM"] / 2**20
    result["file_rss_after_scan_mib"] = status["RssFile"] / 2**20
    print("RESULT " + json.dumps(result))


def bench_memory(work: Path, sizes: list[int], graphs: int) -> list[dict]:
    from sevenomni.data.store import write_store

    rows = []
    for n in sizes:
        path = work / f"mem_{n}"
        t = time.perf_counter()
        write_store(tiny_records(n, seed=n), path)
        write_s = time.perf_counter() - t
        store_mib = sum(f.stat().st_size for f in path.iterdir()) / 2**20
        output = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(path), "--graphs", str(graphs)],
            check=True, capture_output=True, text=True,
        ).stdout
        result = json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[7:])
        row = {"structures": n, "store_mib": round(store_mib, 1), "write_s": round(write_s, 1)}
        row.update({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()})
        rows.append(row)
        print(f"  {n:>9,} structures: store {store_mib:.0f} MiB, peak anon {row['peak_anon_mib']:.0f} MiB, "
              f"peak RSS {row['peak_rss_mib']:.0f} MiB (write {write_s:.0f} s, scan {row['full_scan_s']:.0f} s)",
              flush=True)
        shutil.rmtree(path)
    return rows


# -- report ---------------------------------------------------------------------------------


def markdown(results: dict) -> str:
    ingest, read, memory = results["ingest"], results["read"], results["memory"]
    lines = [
        "# Data-layer benchmark",
        "",
        f"Machine: {results['machine']['cpus']} CPU cores, {results['machine']['platform']}, "
        f"Python {results['machine']['python']}. Command: `{results['command']}` "
        f"({results['seconds']:.0f} s). 1-minute load average at start / end: "
        f"{' / '.join(map(str, results['machine']['load_average_1min_start_end']))}"
        + (" (other processes shared the cores: timings are noisy and parallel speed-ups understated)."
           if max(results["machine"]["load_average_1min_start_end"]) > 1.0 else "."),
        "",
        f"## Ingest ({ingest['structures']:,} structures of 2–8 atoms, extxyz in 4 files, {ingest['input_mib']} MiB)",
        "",
        "| what | structures/s (wall) | CPU-µs per structure (all processes) |",
        "| --- | ---: | ---: |",
        f"| `ingest`, 1 worker | {ingest['extxyz_workers1_per_s']:,.0f} "
        f"| {ingest['extxyz_workers1_cpu_us_per_structure']:,.0f} |",
        f"| `ingest`, 2 workers | {ingest['extxyz_workers2_per_s']:,.0f} "
        f"| {ingest['extxyz_workers2_cpu_us_per_structure']:,.0f} |",
        f"| `write_store` alone (records in memory) | {ingest['write_store_per_s']:,.0f} | |",
        "",
        f"## Read + graph build ({read['structures']:,} Si crystals, mean {read['mean_atoms']} atoms, "
        f"cutoff {read['cutoff']} Å, ~{read['mean_edges_per_atom']} edges/atom, batch {read['batch_size']})",
        "",
        "| what | structures/s |",
        "| --- | ---: |",
        f"| raw record read + decode + checks | {read['raw_record_read_per_s']:,.0f} |",
        f"| DataLoader, 0 workers, `graph.collate` | {read['graphs_workers0_per_s']:,.0f} |",
        f"| DataLoader, 2 workers, `graph.collate` | {read['graphs_workers2_per_s']:,.0f} |",
        f"| DataLoader, 2 workers, `dataset.worker_collate` | {read['graphs_workers2_worker_collate_per_s']:,.0f} |",
        "",
        "## Memory while iterating stores of growing size",
        "",
        "A fresh process per store: full sampler epoch (max_atoms=64), "
        f"{results['graphs_per_store']:,} graphs through a 2-worker DataLoader, then a read of every record.",
        "*Peak anon* is the process's own memory (heap); *peak RSS* also counts LMDB's memory-mapped "
        "file pages, which the kernel reclaims on demand.",
        "",
        "| structures | store MiB | baseline anon MiB | peak anon MiB | peak RSS MiB | file pages after scan MiB "
        "| sampler epoch s | full scan s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in memory:
        lines.append(
            f"| {row['structures']:,} | {row['store_mib']:,.0f} | {row['baseline_anon_mib']:.0f} "
            f"| {row['peak_anon_mib']:.0f} | {row['peak_rss_mib']:.0f} | {row['file_rss_after_scan_mib']:.0f} "
            f"| {row['sampler_epoch_s']:.1f} | {row['full_scan_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--ingest", type=int, default=100_000, help="structures to ingest")
    parser.add_argument("--read", type=int, default=3_000, help="structures for the read benchmark")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--graphs", type=int, default=20_000, help="graphs built per memory run")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.graphs)
        return
    if args.quick:
        args.ingest, args.read, args.sizes, args.graphs = 2_000, 300, [1_000, 10_000], 1_000
    work = Path(tempfile.mkdtemp(prefix="data_bench-", dir=args.workdir))
    start = time.perf_counter()
    load_start = os.getloadavg()
    try:
        print("ingest", flush=True)
        ingest = bench_ingest(work, args.ingest)
        print("read", flush=True)
        read = bench_read(work, args.read)
        print("memory", flush=True)
        memory = bench_memory(work, args.sizes, args.graphs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {
        "command": "python benchmarks/data_bench.py" + (" --quick" if args.quick else ""),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_1min_start_end": [round(load_start[0], 2), round(os.getloadavg()[0], 2)]},
        "seconds": round(time.perf_counter() - start, 1),
        "graphs_per_store": args.graphs,
        "ingest": ingest,
        "read": read,
        "memory": memory,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_bench.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (out / "data_bench.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
