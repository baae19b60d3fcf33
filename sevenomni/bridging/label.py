"""Relabel a domain-bridging selection (:mod:`sevenomni.bridging.select`) with any ASE calculator.

Energy, forces and (cells with a volume) stress go into a new store. Work is split into chunks, each
written atomically under ``OUT.partial/`` by one of ``workers`` processes, so a killed run resumes
where it stopped and loses at most the chunks in flight; a structure the calculator fails on is
skipped and counted by reason. The store appears at ``OUT`` only when every chunk is done.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from tqdm import tqdm

from sevenomni.bridging.select import SelectionError, read_selection
from sevenomni.core.baseline import BaselineSpec, build_calculator, cached_baseline, calculator_results
from sevenomni.core.files import new_sibling
from sevenomni.data.graph import has_stress
from sevenomni.data.ingest import ingest
from sevenomni.data.store import StoreReader

# Structures per labelling chunk: what a killed run can lose, per worker.
CHUNK = 16


@dataclass
class LabelReport:
    out: str
    labelled: int
    skipped: dict[str, int]
    resumed_chunks: int

    def summary(self) -> str:
        line = f"labelled {self.labelled} structure(s) into {self.out}"
        if self.resumed_chunks:
            line += f" ({self.resumed_chunks} chunk(s) from an earlier, interrupted run)"
        if self.skipped:
            reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(self.skipped.items()))
            line += f"; skipped {sum(self.skipped.values())} the calculator failed on: {reasons}"
        return line


def _label_chunk(job: tuple[str, list[int], str, str, dict[str, Any]]) -> None:
    """Label one chunk of the selection; write ``chunk-K.traj`` and ``chunk-K.json`` atomically."""
    store, indices, target, calculator, kwargs = job
    calc = cached_baseline(BaselineSpec(calculator=calculator, kwargs=kwargs)).calculator  # built once per process
    labelled, skipped = [], Counter()
    with StoreReader(store) as reader:
        for index in indices:
            item = reader.read(index)
            atoms = Atoms(numbers=item["numbers"], positions=item["positions"], cell=item["cell"], pbc=item["pbc"])
            try:
                result = calculator_results(calc, atoms, stress=has_stress(atoms))
                if not all(np.isfinite(value).all() for value in result.values()):
                    raise ValueError("non-finite result")
            except Exception as error:  # noqa: BLE001 - any calculator, any failure: skip and count
                skipped[type(error).__name__] += 1
                continue
            atoms.info.update({"source_store": store, "source_index": int(index)})
            for key_name in ("config_type", "name"):
                if item.get(key_name):
                    atoms.info[key_name] = item[key_name]
            atoms.calc = SinglePointCalculator(atoms, **result)  # kept at full precision in the .traj chunk
            labelled.append(atoms)
    target = Path(target)
    structures, summary = _temporary_beside(target), _temporary_beside(target.with_suffix(".json"))
    write(structures, labelled, format="traj")
    summary.write_text(json.dumps({"labelled": len(labelled), "skipped": dict(skipped)}))
    os.replace(structures, target)  # a chunk is done when both files are there
    os.replace(summary, target.with_suffix(".json"))


def _temporary_beside(target: Path) -> Path:
    """A new empty file beside ``target`` (renamed onto it when complete; left over only by a killed run)."""
    return new_sibling(target, ".{name}.{token}.tmp", lambda path: path.open("x").close())


def label(
    selection: str | os.PathLike, calculator: str, out: str | os.PathLike, kwargs: dict[str, Any] | None = None,
    workers: int = 1, progress: bool = False,
) -> LabelReport:
    """Relabel ``selection`` with ``calculator`` (``module:Class``, built with ``kwargs``) into the store ``out``."""
    record = read_selection(selection)
    out = Path(out)
    if out.exists():
        raise SelectionError(f"{out} exists; choose another --out or remove it")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    kwargs = dict(kwargs or {})
    build_calculator(calculator, kwargs)  # fail now, naming the calculator, not in a worker
    work = out.parent / f"{out.name}.partial"
    work.mkdir(parents=True, exist_ok=True)
    settings = {"selection": str(Path(selection).resolve()), "indices": record["indices"],
                "calculator": calculator, "kwargs": kwargs}
    settings_file = work / "settings.json"
    if settings_file.exists() and json.loads(settings_file.read_text()) != settings:
        raise SelectionError(f"{work} holds an interrupted labelling with other settings; remove it to start again")
    settings_file.write_text(json.dumps(settings))
    indices = record["indices"]
    jobs = [(record["store"], indices[i : i + CHUNK], str(work / f"chunk-{i // CHUNK:05d}.traj"), calculator, kwargs)
            for i in range(0, len(indices), CHUNK)]
    done = [job for job in jobs if Path(job[2]).exists() and Path(job[2]).with_suffix(".json").exists()]
    todo = [job for job in jobs if job not in done]
    bar = tqdm(total=len(jobs), initial=len(done), unit=" chunks", disable=not progress, dynamic_ncols=True)
    with bar:
        if workers == 1 or len(todo) <= 1:
            for job in todo:
                _label_chunk(job)
                bar.update(1)
        else:
            context = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
            with context.Pool(min(workers, len(todo))) as pool:
                for _ in pool.imap_unordered(_label_chunk, todo):
                    bar.update(1)
    skipped: Counter = Counter()
    labelled = 0
    for job in jobs:
        summary = json.loads(Path(job[2]).with_suffix(".json").read_text())
        labelled += summary["labelled"]
        skipped.update(summary["skipped"])
    files = [job[2] for job in jobs if json.loads(Path(job[2]).with_suffix(".json").read_text())["labelled"]]
    if not files:
        raise SelectionError(f"the calculator failed on every selected structure: {dict(skipped)}")
    ingest(files, out)
    shutil.rmtree(work)
    return LabelReport(str(out), labelled, dict(skipped), len(done))
