"""Start-up time of the command line: ``sevenomni --help`` and a few ``sevenomni <command> --help``.

    python benchmarks/cli_startup.py            # median of 5 runs per command
    python benchmarks/cli_startup.py --runs 9

Each command runs as ``python -m sevenomni ...`` in a fresh process (interpreter start-up included,
as a user sees it). Writes ``<out>/cli_startup.json`` and ``<out>/cli_startup.md`` (default
``benchmarks/results``). The target (issue 25) is under 1 s on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ([], ["train"], ["eval"], ["data", "ingest"], ["dbs", "select"], ["lammps"])
TARGET_S = 1.0


def time_help(command: list[str], runs: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sevenomni", *command, "--help"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    rows = []
    for command in COMMANDS:
        seconds = time_help(command, args.runs)
        name = " ".join(["sevenomni", *command, "--help"])
        rows.append({"command": name, "median_s": statistics.median(seconds), "runs_s": seconds})
        print(f"{name:<36} {statistics.median(seconds):.3f} s")
    result = {
        "runs": args.runs, "target_s": TARGET_S, "python": platform.python_version(),
        "cpus": os.cpu_count(), "load_average": os.getloadavg(), "commands": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cli_startup.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# CLI start-up time",
        "",
        f"`python benchmarks/cli_startup.py`: median of {args.runs} fresh processes per command (interpreter "
        f"start-up included); Python {result['python']}, {result['cpus']} CPUs, load average "
        f"{result['load_average'][0]:.1f} at the start. Target: under {TARGET_S:g} s.",
        "",
        "| command | median (s) | under target |",
        "|---|---:|:---:|",
        *(f"| `{row['command']}` | {row['median_s']:.3f} | {'yes' if row['median_s'] < TARGET_S else 'no'} |"
          for row in rows),
        "",
    ]
    (out / "cli_startup.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
