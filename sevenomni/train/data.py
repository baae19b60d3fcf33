"""From DatabaseSpecs to datasets, splits and per-stage loaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader

from sevenomni.data.dataset import LMDBDataset, database_datasets, kept_indices, worker_collate
from sevenomni.data.graph import collate
from sevenomni.data.ingest import cached_store
from sevenomni.data.isolated_atoms import IsolatedAtoms, find_isolated_atoms
from sevenomni.data.sampler import MultiDatabaseSampler
from sevenomni.data.spec import DatabaseSpec, SamplingSpec
from sevenomni.data.store import StoreReader, is_store
from sevenomni.nn import Tasks
from sevenomni.train.distributed import DistributedContext


@dataclass
class Database:
    """One database of a run: its spec, index, task index, train / validation datasets and the
    isolated-atom frames left out of both (of ``spec.path``; see :mod:`sevenomni.data.isolated_atoms`)."""

    spec: DatabaseSpec
    index: int
    task_index: int
    train: LMDBDataset
    valid: LMDBDataset | None
    isolated: IsolatedAtoms = field(default_factory=IsolatedAtoms)


def as_list(paths: str | list[str]) -> list[str]:
    return [paths] if isinstance(paths, str) else list(paths)


def resolve_store(paths: str | list[str], spec: DatabaseSpec, cache_dir: Path, ctx: DistributedContext) -> Path:
    """A store path for ``paths``: the store itself, or a cached ingest of raw files."""
    paths = as_list(paths)
    if len(paths) == 1 and is_store(paths[0]):
        return Path(paths[0])
    stores = [p for p in paths if is_store(p)]
    if stores:
        raise ValueError(f"database {spec.name!r}: give one store or raw files, not a mix: {paths}")
    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"database {spec.name!r}: {path} does not exist")
    (store,) = cached_store(
        paths,
        cache_dir,
        energy_key=spec.energy_key,
        forces_key=spec.forces_key,
        stress_key=spec.stress_key,
        min_distance=spec.min_distance,
        baseline=spec.baseline,
        name=spec.name,
        create=ctx.is_main,
    )
    ctx.barrier()
    return Path(store)


def build_databases(
    specs: list[DatabaseSpec],
    tasks: Tasks,
    cutoff: float,
    cache_dir: Path,
    ctx: DistributedContext,
    trained: set[str],
) -> list[Database]:
    """Open every database's store and split it (:func:`sevenomni.data.dataset.database_datasets`).

    A database that no stage trains on (a test set) is evaluation-only: all of it validates.
    Isolated-atom frames neither train nor validate.
    """
    databases = []
    for index, spec in enumerate(specs):
        if spec.task not in tasks:
            raise ValueError(f"database {spec.name!r} has task {spec.task!r}, which no stage trains: {tasks}")
        task_index = tasks.index(spec.task)
        store = resolve_store(spec.path, spec, cache_dir, ctx)
        isolated = isolated_atoms_of([store], spec.name)
        if spec.name not in trained:
            weights = spec.config_type_weights
            empty = LMDBDataset(store, cutoff, task_index, index, np.arange(0), weights)
            valid = LMDBDataset(store, cutoff, task_index, index, kept_indices([store], isolated.indices), weights)
            databases.append(Database(spec, index, task_index, empty, valid, isolated))
            continue
        valid_stores = valid_exclude = None
        if spec.split.valid_path is not None:
            valid_stores = [resolve_store(spec.split.valid_path, spec, cache_dir, ctx)]
            valid_exclude = isolated_atoms_of(valid_stores, spec.name).indices
        train, valid = database_datasets(
            spec, [store], cutoff, task_index, index, valid_stores=valid_stores,
            exclude=isolated.indices, valid_exclude=valid_exclude,
        )
        databases.append(Database(spec, index, task_index, train, valid, isolated))
    return databases


def isolated_atoms_of(stores: list[Path], name: str) -> IsolatedAtoms:
    readers = [StoreReader(path) for path in stores]
    try:
        return find_isolated_atoms(readers, f"database {name!r}")
    finally:
        for reader in readers:
            reader.close()


class RankSlice(torch.utils.data.Sampler):
    """This rank's share of each global batch: items rank, rank + W, rank + 2W, ...

    A global batch with fewer structures than ranks (an epoch's last short batch, a large
    structure alone under ``max_atoms``) leaves some ranks an empty share; they still step.
    """

    def __init__(self, batches: MultiDatabaseSampler, rank: int, world_size: int):
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def __iter__(self):
        for batch in self.batches:
            yield batch[self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(self.batches)


class RankBatchCollate:
    """Collate a rank's share of a global batch; an empty share becomes ``None`` (see ``Trainer._train_step``)."""

    def __init__(self, collate_fn):
        self.collate_fn = collate_fn

    def __call__(self, graphs):
        return self.collate_fn(graphs) if graphs else None


def stage_sampler(databases: list[Database], ratios: dict[str, float] | None, sampling: SamplingSpec) -> MultiDatabaseSampler:
    """Global batches over a stage's databases (identical on every rank)."""
    return MultiDatabaseSampler(
        sizes=[len(d.train) for d in databases],
        atom_counts=[d.train.atom_counts for d in databases],
        spec=sampling,
        weights=[(ratios or {}).get(d.spec.name, d.spec.weight) for d in databases],
    )


def stage_loader(
    databases: list[Database], sampler: MultiDatabaseSampler, ctx: DistributedContext, num_workers: int
) -> DataLoader:
    return DataLoader(
        ConcatDataset([d.train for d in databases]),
        batch_sampler=RankSlice(sampler, ctx.rank, ctx.world_size),
        collate_fn=RankBatchCollate(worker_collate if num_workers else collate),
        num_workers=num_workers,
        persistent_workers=False,
    )


def plain_loader(dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    """In-order batches of a dataset (validation, statistics)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers)
