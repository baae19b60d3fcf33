"""Regenerate every output README.md and docs/*.md quote from a command, and the blocks that show them.

Each *piece* of the registry below is what one README passage quotes. A piece of kind ``command`` runs
the README's exact command(s) in a fresh work directory (a copy of ``recipes/``, so relative paths
resolve as in a clone; ``OMP_NUM_THREADS=1`` unless set, so one torch thread) and records their
output in ``benchmarks/results/readme_outputs.json``; a piece
of kind ``results file`` runs nothing and renders a committed benchmark result
(``benchmarks/results/*.json``, written by the benchmark scripts). README.md or one of docs/*.md (the
research text moved out of the README) holds each rendering, once, between
``<!-- readme-output: NAME -->`` and ``<!-- /readme-output -->``; ``NAME`` is the piece, or
``piece.view`` for a number quoted in prose. ``tests/integration/test_readme_outputs.py`` fails when a block
differs from its rendering, or when a rendering is quoted nowhere.

    python scripts/readme_outputs.py                        # run every command piece (~15 min on 2 cores)
    python scripts/readme_outputs.py --only eval plot       # these pieces, and the pieces they need
    python scripts/readme_outputs.py --write-readme         # only rewrite README.md and docs/*.md from the results
    python scripts/readme_outputs.py --only plot --write-readme --work /tmp/ro   # keep the work dir
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sevenomni.nn.task_names import CHANNEL_COLUMN

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme_blocks import find_blocks, replace_blocks  # noqa: E402

README = ROOT / "README.md"
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "results"
OUTPUTS = RESULTS / "readme_outputs.json"

Entry = dict  # one piece's record in readme_outputs.json
Results = dict  # piece name -> Entry


def no_numbers(outputs: list[str], files: dict[str, str]) -> dict:
    """The parser of a piece whose README block quotes its output text only."""
    return {}


@dataclass(frozen=True)
class Piece:
    """What one README passage quotes: the commands that make it and how to render it.

    ``commands`` are quoted in the README and their outputs recorded; ``setup`` commands run first and are
    quoted too, their outputs not recorded; ``prepare`` commands run before both and are not quoted
    (e.g. making the model file a README command takes as given). ``needs`` are pieces
    whose commands must have run in the same work directory first. ``parse`` turns the recorded outputs
    (and the work directory) into numbers; each view renders one README block from all results.
    ``source`` names the committed results file of a ``results file`` piece.
    """

    name: str
    kind: str  # "command" or "results file"
    views: dict[str, Callable[[Results], str]]
    commands: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    prepare: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    parse: Callable[[list[str], dict[str, str]], dict] = no_numbers
    files: tuple[str, ...] = ()  # files the commands write whose text is recorded (for parse)
    source: str = ""


# ---------------------------------------------------------------------------------------- parsing


def _float(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


def table_rows(text: str, columns: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Rows ``database channel[*] v1 v2 ...`` of a printed metrics table -> {database: {channel: {column: value}}}.

    An own channel marked ``*`` (as ``sevenomni eval`` prints it) is stored under its name and under ``own``.
    """
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for line in text.splitlines():
        tokens = line.split()
        if len(tokens) != len(columns) + 2:
            continue
        values = [_float(token) for token in tokens[2:]]
        if any(value is None for value in values):
            continue
        database, channel = tokens[0], tokens[1]
        metrics = dict(zip(columns, values))
        rows.setdefault(database, {})[channel.rstrip("*")] = metrics
        if channel.endswith("*"):
            rows[database]["own"] = metrics
    return rows


FINAL_COLUMNS = ["energy_mae", "forces_mae", "forces_rmse", "stress_mae"]
EVAL_COLUMNS = ["energy_mae", "energy_rmse", "energy_cmae", "forces_mae", "forces_rmse", "stress_mae", "scale", "spread"]


def final_table(outputs: list[str], files: dict[str, str]) -> dict:
    return {"final": table_rows(outputs[0], FINAL_COLUMNS)}


def eval_tables(outputs: list[str], files: dict[str, str]) -> dict:
    return {f"eval{i}": table_rows(text, EVAL_COLUMNS) for i, text in enumerate(outputs) if "structures in" in text}


def table_header(lines: list[str]) -> str:
    """The header line of a printed metrics table (``database  task (channel) ...``)."""
    return next(line for line in lines if line.split()[:1] == ["database"] and CHANNEL_COLUMN in line)


def lines_with(text: str, *starts: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(starts)]


def fenced(lines: list[str]) -> str:
    return "\n".join(["```", *(line.rstrip() for line in lines), "```"])


def command_line(command: str) -> str:
    return f"$ {command}"


# ---------------------------------------------------------------------------------------- rendering


def entry(results: Results, name: str) -> Entry:
    if name not in results:
        raise KeyError(f"piece {name!r} has no results in {OUTPUTS.relative_to(ROOT)}: run scripts/readme_outputs.py --only {name}")
    return results[name]


def seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 100 else f"{value / 60:.1f} min"


def wall_time(name: str, index: int | None = None) -> Callable[[Results], str]:
    """A piece's wall time (all its quoted commands, or command ``index``), rounded."""

    def render(results: Results) -> str:
        record = entry(results, name)
        return seconds(record["wall_s"] if index is None else record["command_wall_s"][index])

    return render


def quickstart_table(results: Results) -> str:
    record = entry(results, "quickstart")
    final = record["numbers"]["final"]
    own = {"crystal_gfn1": "gfn1", "molecule_gfn2": "gfn2", "test_crystal_gfn1": "gfn1", "test_molecule_gfn2": "gfn2"}
    text = record["outputs"][0].splitlines()
    header = table_header(text)
    keep = []
    for line in text:
        tokens = line.split()
        if len(tokens) < 2 or tokens[0] not in final:
            continue
        if own.get(tokens[0]) == tokens[1] or tokens[0] == "test_molecule_gfn1":
            keep.append(line)
    return fenced([header, *keep])


def eval_block(results: Results) -> str:
    record = entry(results, "eval")
    lines = record["outputs"][0].splitlines()
    start = lines.index(table_header(lines))
    rows = lines[start:start + 7]  # two header lines, the first five rows
    summary = [line for line in lines if " structures in " in line]
    wrote = lines_with(record["outputs"][0], "wrote ")
    paths = wrote[0].removeprefix("wrote ").split(", ") if wrote else []
    wrote_line = "wrote " + ", ".join(paths[:3]) + (", …" if len(paths) > 3 else "")
    return fenced([command_line(record["commands"][0]), *rows, "...", *summary[-1:], wrote_line])


def eval_number(database: str, channel: str, column: str, fmt: Callable[[float], str]) -> Callable[[Results], str]:
    def render(results: Results) -> str:
        return fmt(entry(results, "eval")["numbers"]["eval0"][database][channel][column])

    return render


def quoted_commands(name: str) -> Callable[[Results], str]:
    """The commands a piece runs that the README shows, as a bash block."""

    def render(results: Results) -> str:
        piece = PIECES[name]
        return "\n".join(["```bash", *piece.setup, *piece.commands, "```"])

    return render


def whole_output(name: str, with_command: bool = True) -> Callable[[Results], str]:
    def render(results: Results) -> str:
        record = entry(results, name)
        lines = [command_line(record["commands"][0])] if with_command else []
        return fenced(lines + record["outputs"][0].strip("\n").splitlines())

    return render


def lammps_block(results: Results) -> str:
    text = entry(results, "lammps_npt")["outputs"][0]
    lines = text.splitlines()
    channel = lines_with(text, "sevenomni: channel")
    head = next(i for i, line in enumerate(lines) if line.split()[:2] == ["Step", "Temp"])
    thermo = []
    for line in lines[head + 1:]:
        if line.startswith("Loop time"):
            break
        thermo.append(line)
    loop = lines_with(text, "Loop time")
    performance = lines_with(text, "Performance")
    return fenced([*channel, "...", lines[head], *thermo[:3], "       ...", thermo[-1], *loop, "", *performance])


def lammps_compression(results: Results) -> str:
    """How much the NPT run's volume shrank from its first to its last thermo line."""
    text = entry(results, "lammps_npt")["outputs"][0].splitlines()
    head = next(i for i, line in enumerate(text) if line.split()[:2] == ["Step", "Temp"])
    column = text[head].split().index("Volume")
    rows = [line.split() for line in text[head + 1:] if line.split() and line.split()[0].isdigit()]
    first, last = float(rows[0][column]), float(rows[-1][column])
    return f"{100 * (1 - last / first):.0f} %"


def torchsim_block(results: Results) -> str:
    return fenced(lines_with(entry(results, "torchsim")["outputs"][0], "gfn1:", "gfn2:"))


def dbs_block(results: Results) -> str:
    record = entry(results, "dbs")
    return fenced(lines_with(record["outputs"][1], "selected") + lines_with(record["outputs"][2], "labelled"))


def own(results: Results, piece: str, table: str, database: str) -> dict[str, float]:
    return entry(results, piece)["numbers"][table][database]["own"]


def quickstart_own(results: Results, database: str) -> dict[str, float]:
    return own(results, "eval", "eval0", database)


def percent_change(before: float, after: float) -> str:
    change = 100 * (after / before - 1)
    return f"{change:+.0f} %".replace("-", "−")


def linear_correction_table(results: Results) -> str:
    record = entry(results, "linear_correction")
    c = record["numbers"]["c_gfn1"]
    rows = [("quickstart", quickstart_own(results, "test_molecule_gfn1"), quickstart_own(results, "test_crystal_gfn1")),
            (f"linear-corrected (c = {c:.3f})", own(results, "linear_correction", "eval1", "test_molecule_gfn1"),
             own(results, "linear_correction", "eval1", "test_crystal_gfn1"))]
    lines = ["| gfn1 channel | F MAE mol@gfn1 | softening scale mol@gfn1 | F MAE crystal@gfn1 | softening crystal@gfn1 |",
             "|---|---:|---:|---:|---:|"]
    for label, molecule, crystal in rows:
        lines.append(f"| {label} | {molecule['forces_mae']:.3f} eV/Å | {molecule['scale']:.3f} | "
                     f"{crystal['forces_mae']:.3f} eV/Å | {crystal['scale']:.3f} |")
    return "\n".join(lines)


def linear_correction_change(database: str) -> Callable[[Results], str]:
    def render(results: Results) -> str:
        before = quickstart_own(results, database)["forces_mae"]
        after = own(results, "linear_correction", "eval1", database)["forces_mae"]
        return f"{'worse' if after > before else 'better'} ({before:.3f} → {after:.3f} eV/Å, {percent_change(before, after)})"

    return render


def linear_correction_c(results: Results) -> str:
    """The fitted factor and what it does to the channel's forces."""
    c = entry(results, "linear_correction")["numbers"]["c_gfn1"]
    return f"c = {c:.3f} scales the gfn1 channel's forces {'up' if c > 1 else 'down'}"


FEW_SETS = [("test_molecule_gfn1", "mol@gfn1 (gfn1)"), ("test_crystal_gfn1", "crystal@gfn1 (gfn1)"),
            ("test_molecule_gfn2", "mol@gfn2 (gfn2)")]


def few_structures_table(results: Results) -> str:
    lines = ["| | " + " | ".join(f"F MAE {label}" for _, label in FEW_SETS) + " |", "|---|---:|---:|---:|"]
    models = [("quickstart", "eval", "eval0"), ("fine-tuned, `model.pt`", "few_structures", "eval1"),
              ("fine-tuned, `model_best.pt`", "few_structures", "eval2")]
    for label, piece, table in models:
        cells = [f"{own(results, piece, table, database)['forces_mae']:.3f} eV/Å" for database, _ in FEW_SETS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def few_structures_change(database: str, table: str = "eval1") -> Callable[[Results], str]:
    def render(results: Results) -> str:
        before = quickstart_own(results, database)["forces_mae"]
        return percent_change(before, own(results, "few_structures", table, database)["forces_mae"])

    return render


def delta_table(results: Results) -> str:
    record = entry(results, "delta_learning")
    lines = record["outputs"][0].splitlines()
    header = table_header(lines)
    rows = [line for line in lines if line.split()[:2] in (["dbs_molecule_gfn1", "gfn1_delta"], ["test_molecule_gfn1", "gfn1_delta"])]
    return fenced([header, *rows])


def delta_test_force(results: Results) -> str:
    return f"{entry(results, 'delta_learning')['numbers']['final']['test_molecule_gfn1']['gfn1_delta']['forces_mae']:.3f} eV/Å"


def finetune_mf0_parse(outputs: list[str], files: dict[str, str]) -> dict:
    import csv
    import io

    def read(name: str) -> dict[str, dict[str, float]]:
        rows = csv.DictReader(io.StringIO(files[f"runs/finetune_7net_mf0/{name}"]))
        return {row["database"]: {k: float(v) for k, v in row.items() if _float(v) is not None}
                for row in rows if row.get("channel") == "gfn2"}

    return {"before": read("initial.csv"), "after": read("final.csv")}


def finetune_mf0_table(results: Results) -> str:
    numbers = entry(results, "finetune_mf0")["numbers"]
    lines = ["| gfn2 channel | force MAE before | force MAE after | energy MAE before | energy MAE after |",
             "|---|---:|---:|---:|---:|"]
    for database, label in [("molecule_gfn2", "validation (15 frames of training molecules)"),
                            ("test_molecule_gfn2", "test (30 frames of 5 unseen molecules)")]:
        before, after = numbers["before"][database], numbers["after"][database]
        lines.append(f"| {label} | {1000 * before['forces_mae']:.0f} meV/Å | {1000 * after['forces_mae']:.0f} meV/Å | "
                     f"{before['energy_mae']:.1f} meV/atom | {after['energy_mae']:.1f} meV/atom |")
    return "\n".join(lines)


# ------------------------------------------------------------------------- results-file pieces


def markdown_columns(name: str, header: str, columns: dict[str, str], rows: dict[str, str] | None = None,
                     bold: tuple[str, ...] = ()) -> Callable[[Results], str]:
    """Some columns of a table of ``benchmarks/results/<name>`` (``columns``: its header -> the README's),
    its first column relabelled by ``rows`` where listed, the first value of each row in ``bold`` in bold."""

    def render(results: Results) -> str:
        table = [line.strip("| ").split(" | ") for line in table_lines(name, header)]
        source_header, data = table[0], table[2:]
        picked = [source_header.index(column) for column in columns]
        lines = ["| " + " | ".join(columns.values()) + " |", "|---|" + "---:|" * (len(columns) - 1)]
        for cells in data:
            label = (rows or {}).get(cells[0], cells[0])
            values = [cells[i] for i in picked[1:]]
            if label in bold:
                values[0] = f"**{values[0]}**"
            lines.append("| " + " | ".join([label, *values]) + " |")
        return "\n".join(lines)

    return render


def results_file(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def table_lines(name: str, header: str) -> list[str]:
    """The lines of the first table of ``benchmarks/results/<name>`` whose header row starts with ``header``."""
    text = (RESULTS / name).read_text().splitlines()
    start = next((i for i, line in enumerate(text) if line.startswith(header)), None)
    if start is None:
        raise ValueError(f"benchmarks/results/{name} has no table starting {header!r}")
    end = next((i for i in range(start, len(text)) if not text[i].startswith("|")), len(text))
    return text[start:end]


def markdown_table(name: str, header: str, thousands_column: int | None = None) -> Callable[[Results], str]:
    """The table of ``benchmarks/results/<name>`` whose header row starts with ``header``, as the
    benchmark script wrote it from its JSON (``thousands_column``: that column with a thousands
    separator and no decimals)."""

    def render(results: Results) -> str:
        rows = [line.split(" | ") for line in table_lines(name, header)]
        if thousands_column is not None:
            for cells in rows:
                if len(cells) > thousands_column and _float(cells[thousands_column]) is not None:
                    cells[thousands_column] = f"{float(cells[thousands_column]):,.0f}"
        return "\n".join(" | ".join(cells) for cells in rows)

    return render


def lambench_load(results: Results) -> str:
    """The range of the load averages the LAMBench models were measured under."""
    loads = [model["machine"]["load_average"][0] for model in results_file("lambench.json")["models"].values()]
    return f"{min(loads):.1f}–{max(loads):.1f}"


def lambench_cost_ratio(results: Results) -> str:
    """7net-0's cost per atom as a multiple of the quickstart model's (both 7net-0 rows)."""
    models = results_file("lambench.json")["models"]
    base = models["quickstart"]["efficiency"]["us_per_atom"]
    ratios = sorted(model["efficiency"]["us_per_atom"] / base for name, model in models.items() if name.startswith("7net-0"))
    return f"{ratios[0]:.0f}–{ratios[-1]:.0f}×"


def scientific(value: float) -> str:
    """``3.2·10⁻³``."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}·10" + str(int(exponent)).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))


def lambench_unstable(model: str) -> Callable[[Results], str]:
    """What ``model`` did in NVE: the structures it drifted on (instability index > 0), or that it did not."""

    def render(results: Results) -> str:
        structures = results_file("lambench.json")["models"][model]["instability"]["structures"]
        drifting = [f"{s['structure'].split(':')[1]} (Φ = {scientific(s['phi'])} eV/atom/ps, index {s['index']:.2f})"
                    for s in structures if s["index"] > 0]
        if not drifting:
            return "did not drift measurably"
        return f"drifted on {', '.join(drifting)}, so its M_IS (the mean index over the three structures) is not zero"

    return render


def lambench_number(model: str, path: tuple[str, ...], fmt: str = "{:.2f}") -> Callable[[Results], str]:
    def render(results: Results) -> str:
        value = results_file("lambench.json")["models"][model]
        for key in path:
            value = value[key]
        return fmt.format(value)

    return render


# ---------------------------------------------------------------------------------------- registry

TINY = "recipes/data/tiny"
MLIAP_MODEL = ("python -c \"import sevenomni; sevenomni.save_checkpoint(sevenomni.build_model(tasks=['crystal', 'molecule'], "
               "elements=['H', 'C', 'N', 'O', 'Si'], channels=4, lmax=1, num_layers=2, cutoff=4.0), 'model.pt')\"")


def eval_of(model: str, out: str, task: str = "") -> str:
    return f"sevenomni eval {model} {TINY}/test_*.extxyz --out {out} --threads 1" + (f" --task {task}" if task else "")


def info_c(outputs: list[str], files: dict[str, str]) -> dict:
    numbers = eval_tables(outputs, files)
    match = re.search(r"gfn1[^\n]*?(\d+\.\d+)", "\n".join(line for line in outputs[0].splitlines() if "linear correction" in line))
    if not match:
        raise RuntimeError(f"no linear correction of gfn1 in `sevenomni info`:\n{outputs[0]}")
    numbers["c_gfn1"] = float(match[1])
    return numbers


PIECES: dict[str, Piece] = {piece.name: piece for piece in [
    Piece("quickstart", "command", commands=("sevenomni train recipes/quickstart.yaml",), parse=final_table,
          views={"": quickstart_table, "time": wall_time("quickstart")}),
    Piece("eval", "command", needs=("quickstart",),
          commands=(f"sevenomni eval runs/quickstart/model.pt {TINY}/test_*.extxyz --out runs/quickstart/eval --threads 1 --predictions",),
          parse=eval_tables,
          views={"": eval_block,
                 "gfn2_offset": eval_number("test_crystal_gfn1", "gfn2", "energy_mae", lambda v: f"{v / 1000:.1f} eV/atom"),
                 "gfn2_cmae": eval_number("test_crystal_gfn1", "gfn2", "energy_cmae", lambda v: f"{v:.0f} meV/atom"),
                 "molecule_scale": eval_number("test_molecule_gfn1", "gfn1", "scale", lambda v: f"{v:.2f}"),
                 "molecule_force": eval_number("test_molecule_gfn1", "gfn1", "forces_mae", lambda v: f"{v:.3f} eV/Å")}),
    Piece("embeddings", "command", needs=("quickstart",),
          commands=("sevenomni analyze embeddings runs/quickstart/model.pt --out runs/quickstart/embeddings",),
          views={"": whole_output("embeddings")}),
    Piece("plot", "command", needs=("quickstart",), commands=("sevenomni plot runs/quickstart",),
          views={"": whole_output("plot")}),
    Piece("mliap_export", "command", prepare=(MLIAP_MODEL,),
          commands=("sevenomni export model.pt --format mliap --task crystal --out model.mliap.pkl",),
          views={"": whole_output("mliap_export", with_command=False)}),
    Piece("lammps_npt", "command", needs=("quickstart",),
          commands=("sevenomni lammps -in recipes/lammps/npt_crystal.in --model runs/quickstart/model.pt --task gfn1",),
          views={"": lammps_block, "compression": lammps_compression}),
    Piece("torchsim", "command", needs=("quickstart",),
          commands=("python recipes/torchsim/nvt_then_relax.py runs/quickstart/model.pt gfn1 gfn2",),
          views={"": torchsim_block, "time": wall_time("torchsim")}),
    Piece("dbs", "command", needs=("quickstart",),
          commands=(f"sevenomni data ingest {TINY}/molecule_gfn2.extxyz --out runs/finetune/molecule_gfn2",
                    "sevenomni dbs select runs/finetune/molecule_gfn2 --count 10 --strategy disagreement --model runs/quickstart "
                    "--out runs/finetune/ten.json",
                    "sevenomni dbs label runs/finetune/ten.json --calculator tblite.ase:TBLite "
                    "--kwargs '{\"method\": \"GFN1-xTB\", \"verbosity\": 0}' --out runs/finetune/ten_molecules_gfn1 --workers 2",
                    "sevenomni dbs select runs/finetune/molecule_gfn2 --count 1 --strategy disagreement --model runs/quickstart "
                    "--out runs/finetune/one.json",
                    "sevenomni dbs label runs/finetune/one.json --calculator tblite.ase:TBLite "
                    "--kwargs '{\"method\": \"GFN1-xTB\", \"verbosity\": 0}' --out runs/finetune/one_molecule_gfn1 --workers 2"),
          views={"": dbs_block, "commands": quoted_commands("dbs")}),
    Piece("linear_correction", "command", needs=("quickstart", "eval", "dbs"),
          commands=("sevenomni info runs/finetune/linear_correction/model.pt",
                    eval_of("runs/finetune/linear_correction/model.pt", "runs/finetune/linear_correction/eval", "gfn1")),
          setup=("sevenomni train recipes/finetune/linear_correction.yaml",), parse=info_c,
          views={"": linear_correction_table, "commands": quoted_commands("linear_correction"), "c": linear_correction_c,
                 "molecules": linear_correction_change("test_molecule_gfn1"),
                 "crystals": linear_correction_change("test_crystal_gfn1")}),
    Piece("few_structures", "command", needs=("quickstart", "eval", "dbs"),
          commands=("sevenomni train recipes/finetune/few_structures.yaml",
                    eval_of("runs/finetune/few_structures/model.pt", "runs/finetune/few_structures/eval"),
                    eval_of("runs/finetune/few_structures/model_best.pt", "runs/finetune/few_structures/eval_best")),
          parse=eval_tables,
          views={"": few_structures_table, "commands": quoted_commands("few_structures"),
                 "time": wall_time("few_structures", 0),
                 "molecules": few_structures_change("test_molecule_gfn1"),
                 "molecules_best": few_structures_change("test_molecule_gfn1", "eval2"),
                 "crystals": few_structures_change("test_crystal_gfn1"),
                 "gfn2": few_structures_change("test_molecule_gfn2")}),
    Piece("delta_learning", "command", commands=("sevenomni train recipes/finetune/delta_learning.yaml",),
          parse=final_table,
          views={"": delta_table, "commands": quoted_commands("delta_learning"), "test_force": delta_test_force, "time": wall_time("delta_learning")}),
    Piece("finetune_mf0", "command", commands=("sevenomni train recipes/finetune_7net_mf0.yaml",),
          files=("runs/finetune_7net_mf0/initial.csv", "runs/finetune_7net_mf0/final.csv"),
          parse=finetune_mf0_parse, views={"": finetune_mf0_table, "time": wall_time("finetune_mf0")}),
    Piece("lambench", "results file", source="benchmarks/results/lambench.json",
          views={"": markdown_table("lambench.md", "| model | M_FF", thousands_column=4),
                 "quickstart_molecule_forces": lambench_number("quickstart", ("force_field", "domains", "small molecules", "by_type", "forces")),
                 "quickstart_crystal_forces": lambench_number("quickstart", ("force_field", "domains", "inorganic crystals", "by_type", "forces")),
                 "load": lambench_load, "cost_ratio": lambench_cost_ratio,
                 "quickstart_unstable": lambench_unstable("quickstart")}),
    Piece("ablation", "results file", source="benchmarks/results/ablation.json",
          views={"": markdown_columns("ablation.md", "| arm | mol@gfn1 F", {
              "arm": "arm", "mol@gfn1 F (meV/Å)": "mol@gfn1 F", "mol@gfn1 ΔE (meV/atom)": "mol@gfn1 ΔE",
              "crystal@gfn1 F (meV/Å)": "crystal@gfn1 F", "crystal@gfn1 E (meV/atom)": "crystal@gfn1 E",
              "mol@gfn2 F (meV/Å)": "mol@gfn2 F", "gfn2 ch. on mol@gfn1 F (meV/Å)": "gfn2 ch. on mol@gfn1 F",
              "common on mol@gfn1 F (meV/Å)": "common on mol@gfn1 F", "‖θT‖": "‖θT‖"},
              rows={"Multi, L2 all (λ = 1e-06)": "Multi, L2 all (λ = 10⁻⁶)"},
              bold=("Multi, L2 θT (λ = 1)", "Multi+DBS, L2 θT (λ = 1)"))}),
    Piece("dbs_selection", "results file", source="benchmarks/results/dbs_selection.json",
          views={"": markdown_columns("dbs_selection.md", "| arm | mol@gfn1 F", {
              "arm": "arm", "mol@gfn1 F (meV/Å)": "mol@gfn1 F (meV/Å)", "crystal@gfn1 F (meV/Å)": "crystal@gfn1 F (meV/Å)",
              "mol@gfn2 F (meV/Å)": "mol@gfn2 F (meV/Å)"},
              rows={"Multi, L2 θT (no DBS)": "no DBS", "Multi+DBS, L2 θT — DBS by disagreement": "DBS by disagreement",
                    "Multi+DBS, L2 θT — DBS by random": "DBS by random"})}),
    Piece("md_routes", "results file", source="benchmarks/results/md_routes.json",
          views={"": markdown_table("md_routes.md", "| route |")}),
]}


def marker_names() -> dict[str, Callable[[Results], str]]:
    """Every README marker name (``piece`` or ``piece.view``) and its renderer."""
    return {name + (f".{view}" if view else ""): render for name, piece in PIECES.items() for view, render in piece.views.items()}


def load_results(path: Path = OUTPUTS) -> Results:
    return json.loads(path.read_text())["pieces"] if path.is_file() else {}


def render_all(results: Results) -> dict[str, str]:
    return {name: render(results) for name, render in marker_names().items()}


# ---------------------------------------------------------------------------------------- running


def provenance() -> dict:
    from sevenomni.core.version import __version__

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "sevenomni", "recipes"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return {"sevenomni_version": __version__, "commit": commit + ("+uncommitted changes" if dirty else ""),
            "torch_threads": os.environ.get("OMP_NUM_THREADS", "1")}


def run_command(command: str, work: Path) -> tuple[str, float]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.setdefault("OMP_NUM_THREADS", "1")  # one torch thread, as the README's timings are quoted
    start = time.perf_counter()
    done = subprocess.run(command, shell=True, cwd=work, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"`{command}` failed (exit {done.returncode}) in {work}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout, elapsed


def run_piece(piece: Piece, work: Path, source: dict | None = None) -> Entry:
    """Run one piece's setup and commands in ``work``; ``source``: the code's version and commit
    (taken once per pass, before anything runs)."""
    print(f"[readme_outputs] {piece.name} ...", flush=True)
    start = time.perf_counter()
    for command in piece.prepare + piece.setup:
        run_command(command, work)
    outputs, walls = [], []
    for command in piece.commands:
        output, elapsed = run_command(command, work)
        outputs.append(output)
        walls.append(round(elapsed, 2))
    record = {"kind": piece.kind, "prepare": list(piece.prepare), "setup": list(piece.setup), "commands": list(piece.commands), "outputs": outputs,
              "files": {name: (work / name).read_text() for name in piece.files}, "command_wall_s": walls,
              "wall_s": round(sum(walls) if piece.commands else 0.0, 2),
              "piece_wall_s": round(time.perf_counter() - start, 2),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end",
              **(source or provenance())}
    print(f"[readme_outputs] {piece.name}: {record['piece_wall_s']:.0f} s", flush=True)
    return parsed(piece.name, record)


def parsed(name: str, record: Entry) -> Entry:
    """``record`` with its numbers parsed from its outputs and files (a parse error is printed, not fatal,
    so a long pass keeps its other pieces; fix the parser and run ``--reparse``)."""
    try:
        numbers = PIECES[name].parse(record["outputs"], record.get("files", {}))
    except Exception as error:  # noqa: BLE001 - reported, and the test fails on the missing numbers
        print(f"[readme_outputs] {name}: cannot parse its output: {error!r}", flush=True)
        numbers = {}
    return {**record, "numbers": numbers}


def with_needs(names: list[str]) -> list[str]:
    """``names`` and every piece they need, in registry order."""
    wanted: set[str] = set()

    def add(name: str) -> None:
        if name not in PIECES:
            raise SystemExit(f"unknown piece {name!r}; pieces: {', '.join(PIECES)}")
        wanted.add(name)
        for need in PIECES[name].needs:
            add(need)

    for name in names:
        add(name)
    return [name for name in PIECES if name in wanted and PIECES[name].kind == "command"]


def run_pieces(names: list[str], work: Path) -> list[str]:
    """Run the named command pieces (and what they need) in ``work``, saving each record as it is done."""
    shutil.copytree(ROOT / "recipes", work / "recipes", dirs_exist_ok=True)
    done, source = [], provenance()
    for name in with_needs(names):
        save_results({name: run_piece(PIECES[name], work, source)})
        done.append(name)
    return done


def save_results(fresh: Results, path: Path = OUTPUTS) -> None:
    results = load_results(path)
    results.update(fresh)
    results = {name: results[name] for name in PIECES if name in results}
    document = {"description": "Outputs of the README's commands, written by scripts/readme_outputs.py; "
                               "README.md's readme-output blocks are rendered from them.", "pieces": results}
    from sevenomni.analysis.json_output import json_ready  # NaN (an absent label's MAE) as null: strict JSON

    path.write_text(json.dumps(json_ready(document), indent=1, ensure_ascii=False) + "\n")


def documents() -> list[Path]:
    """The files that quote outputs: README.md and the Markdown files of docs/."""
    return [README, *sorted(DOCS.glob("*.md"))]


def write_readme(results: Results) -> None:
    """Rewrite the marked blocks of every document that has any."""
    rendered = render_all(results)
    for path in documents():
        text = path.read_text()
        if find_blocks(text):
            path.write_text(replace_blocks(text, rendered))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"pieces to rerun (with what they need): {', '.join(PIECES)}")
    parser.add_argument("--write-readme", action="store_true", help="rewrite the blocks of README.md and docs/*.md from the results")
    parser.add_argument("--reparse", action="store_true", help="parse the recorded outputs again (after a parser change)")
    parser.add_argument("--work", type=Path, help="work directory (kept; default: a temporary one, removed)")
    args = parser.parse_args(argv)
    names = args.only or ([] if args.write_readme or args.reparse else list(PIECES))
    if names:
        start = time.perf_counter()
        work = args.work or Path(tempfile.mkdtemp(prefix="readme_outputs_"))
        work.mkdir(parents=True, exist_ok=True)
        try:
            done = run_pieces(names, work)
        finally:
            if args.work is None:
                shutil.rmtree(work, ignore_errors=True)
        print(f"[readme_outputs] {len(done)} piece(s) in {time.perf_counter() - start:.0f} s -> {OUTPUTS.relative_to(ROOT)}")
    if args.reparse:
        save_results({name: parsed(name, record) for name, record in load_results().items()})
    if args.write_readme:
        write_readme(load_results())
        count = sum(len(find_blocks(path.read_text())) for path in documents())
        print(f"[readme_outputs] rewrote {count} block(s) of README.md and docs/*.md")


if __name__ == "__main__":
    main()
