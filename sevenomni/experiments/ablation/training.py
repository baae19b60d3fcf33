"""Training one arm × seed of the ablation through ``sevenomni train``, each in a subprocess.

A run lives in its own directory with a record (``ablation_run.json``: what was trained, every
attempt's wall time and the command); a finished run is not trained again, an interrupted one
continues with ``sevenomni train --resume``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from sevenomni.experiments.ablation.arms import run_overrides
from sevenomni.experiments.checkout import ROOT, shown

RUN_RECORD = "ablation_run.json"
CONSOLE_LOG = "console.log"  # everything the training command printed (its own train.log has the messages)


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
