"""Domain-bridging sets: choose the structures of one domain to relabel with another task's method.

``select`` picks a fraction of a store's structures: at random, by farthest-point sampling on a
model's invariant node features (mean over each structure's atoms, on the common PES), or where
two channels of a multi-task model disagree most (RMS difference of their forces). It writes a
selection file (JSON: the store, the indices, their scores and how they were chosen).
They are then relabelled by :mod:`sevenomni.bridging.label`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from sevenomni.core.arguments import SELECTION_STRATEGIES
from sevenomni.core.devices import resolve_device
from sevenomni.core.keys import FORCES
from sevenomni.data.dataset import LMDBDataset
from sevenomni.data.graph import collate
from sevenomni.data.store import StoreReader, is_store
from sevenomni.nn import SevenOmniModel

SELECTION_FORMAT = "sevenomni-dbs-selection/1"


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
