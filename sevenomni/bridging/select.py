"""Domain-bridging-set tools: choose structures of one domain to relabel, and relabel them.

``select`` picks a fraction of a store's structures: at random, by farthest-point sampling on a
model's invariant node features (mean over each structure's atoms, on the common PES), or where
two channels of a multi-task model disagree most (RMS difference of their forces). It writes a
selection file (JSON: the store, the indices, their scores and how they were chosen).

``label`` computes energy, forces and (cells with a volume) stress of a selection with any ASE
calculator and writes them into a new store. Work is split into chunks, each written atomically
under ``OUT.partial/`` by one of ``workers`` processes, so a killed run resumes where it stopped
and loses at most the chunks in flight; a structure the calculator fails on is skipped and
counted by reason. The store appears at ``OUT`` only when every chunk is done.
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
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from torch.utils.data import DataLoader
from tqdm import tqdm

from sevenomni.baseline import BaselineSpec, build_calculator, cached_baseline, calculator_results
from sevenomni.calculator import has_stress, resolve_device
from sevenomni.data.dataset import LMDBDataset
from sevenomni.data.graph import collate
from sevenomni.data.ingest import ingest
from sevenomni.data.store import StoreReader, is_store
from sevenomni.arguments import SELECTION_STRATEGIES
from sevenomni.files import new_sibling
from sevenomni.keys import FORCES
from sevenomni.nn import SevenOmniModel

SELECTION_FORMAT = "sevenomni-dbs-selection/1"
CHUNK = 16


class SelectionError(ValueError):
    """A selection that cannot be made or read (bad fraction, strategy, store, model, file)."""


# ----------------------------------------------------------------------------------- selection
def structure_scores(
    model: SevenOmniModel, store: str | os.PathLike, strategy: str, channels: tuple[str, str] | None,
    batch_size: int = 16, device: str | torch.device = "auto",
) -> np.ndarray:
    """Per structure: its mean invariant feature vector (``fps``), or the RMS force difference
    between the two ``channels`` (``disagreement``)."""
    device = resolve_device(device)
    model = model.to(device).eval()
    dataset = LMDBDataset(store, model.cutoff, task_index=0, database_index=0)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    if strategy == "disagreement":  # the common channel with the other channel's shifts and scale
        a, b = channels
        resolved = [model.resolve_channel(c, other if model.tasks.channel(c) is None else None)
                    for c, other in ((a, b), (b, a))]
    out = []
    for batch in loader:
        batch = batch.to(device)
        if strategy == "fps":
            features = model.invariant_features(batch).double()
            sums = features.new_zeros(batch.num_graphs, features.shape[1]).index_add(0, batch.batch, features)
            out.append((sums / batch.num_atoms.view(-1, 1).double()).cpu().numpy())
        else:
            forces = []
            for index, common in resolved:
                batch.task = torch.full_like(batch.task, index)
                prediction = model(batch, common=common, compute_forces=True, compute_stress=False, create_graph=False)
                forces.append(prediction[FORCES])
            squared = (forces[0] - forces[1]).double().pow(2).sum(dim=1)
            per_structure = squared.new_zeros(batch.num_graphs).index_add(0, batch.batch, squared)
            out.append(torch.sqrt(per_structure / (3 * batch.num_atoms.double())).detach().cpu().numpy())
    return np.concatenate(out)


def farthest_points(features: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Greedy farthest-point sampling (standardized features), from a seeded first point."""
    scale = features.std(axis=0)
    points = (features - features.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
    chosen = [int(np.random.default_rng(seed).integers(len(points)))]
    distance = np.linalg.norm(points - points[chosen[0]], axis=1)
    while len(chosen) < count:
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(points - points[nxt], axis=1))
    return np.array(chosen)


def select(
    store: str | os.PathLike, fraction: float | None = None, strategy: str = "random",
    model: SevenOmniModel | None = None, channels: tuple[str, str] | None = None, seed: int = 0,
    device: str | torch.device = "auto", count: int | None = None,
) -> dict[str, Any]:
    """A selection record: ``count`` indices of ``store``, or ``round(fraction · n)`` (at least 1),
    chosen by ``strategy``."""
    if not is_store(store):
        raise SelectionError(f"{store}: not a sevenomni store (ingest raw files with `sevenomni data ingest`)")
    if (fraction is None) == (count is None):
        raise SelectionError("give exactly one of --fraction and --count")
    if fraction is not None and not 0 < fraction <= 1:
        raise SelectionError(f"--fraction must be in (0, 1], got {fraction}")
    if strategy not in SELECTION_STRATEGIES:
        raise SelectionError(f"unknown strategy {strategy!r}; choose one of {', '.join(SELECTION_STRATEGIES)}")
    size = len(StoreReader(store))
    if count is None:
        count = max(1, round(fraction * size))
    elif not 1 <= count <= size:
        raise SelectionError(f"--count must be between 1 and the store's {size} structures, got {count}")
    record: dict[str, Any] = {
        "format": SELECTION_FORMAT, "store": str(Path(store).resolve()), "size": size, "strategy": strategy,
        "fraction": fraction, "seed": seed,
    }
    if strategy == "random":
        indices, scores = np.sort(np.random.default_rng(seed).choice(size, count, replace=False)), None
    else:
        if model is None:
            raise SelectionError(f"strategy {strategy!r} needs a model (--model)")
        if strategy == "disagreement":
            channels = channels or tuple(model.tasks[:2])
            if len(model.tasks) < 2 or len(channels) != 2:
                raise SelectionError(f"disagreement needs two channels of a multi-task model; tasks: {model.tasks}")
            channels = tuple(model.tasks.channel_name(channel) for channel in channels)
            if channels[0] == channels[1]:
                raise SelectionError(f"disagreement needs two different channels, got {list(channels)}")
            record["channels"] = list(channels)
        scores = structure_scores(model, store, strategy, channels, device=device)
        if strategy == "fps":
            indices, scores = farthest_points(scores, count, seed), None
        else:
            indices = np.argsort(-scores, kind="stable")[:count]
    record["indices"] = [int(i) for i in indices]
    if scores is not None:
        record["scores"] = [float(scores[i]) for i in indices]
    return record


def write_selection(record: dict[str, Any], path: str | os.PathLike) -> None:
    Path(path).write_text(json.dumps(record, indent=1) + "\n")


def read_selection(path: str | os.PathLike) -> dict[str, Any]:
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SelectionError(f"{path}: not a readable selection file ({error})") from None
    if not isinstance(record, dict) or record.get("format") != SELECTION_FORMAT:
        raise SelectionError(f"{path}: not a selection file of `sevenomni dbs select` (format {SELECTION_FORMAT})")
    if not is_store(record["store"]):
        raise SelectionError(f"{path}: its store {record['store']} is gone or damaged")
    return record


# ----------------------------------------------------------------------------------- labelling
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
