"""Databases: named sources of labelled structures, opened into datasets over their stores.

A database is a store, or raw files ingested once into a cached store (:func:`resolve_store`).
Training opens the databases of a run config (:func:`open_databases`: split into training and
validation structures); ``sevenomni eval`` opens each DATA source as a validation-only database
(:meth:`Database.validation_only`: all of it is scored). Both give a :class:`Database`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sevenomni.core.base import DEFAULT_MIN_DISTANCE
from sevenomni.core.baseline import BaselineSpec
from sevenomni.data.dataset import LMDBDataset, database_datasets, kept_indices
from sevenomni.data.ingest import cached_store
from sevenomni.data.isolated_atoms import IsolatedAtoms, find_isolated_atoms
from sevenomni.data.spec import DatabaseSpec
from sevenomni.data.store import StoreReader, is_store


@dataclass
class Database:
    """One database: its name and source ``path``, the task it belongs to and its datasets.

    ``own`` is the task's name (None when unknown: an eval source whose task was neither given nor
    inferred), ``task_index`` its channel, the one the graphs are tagged with (0 when unknown: a
    scoring pass sets each batch's channel itself), ``index`` the database's position among those
    opened together. ``train`` is empty for a validation-only database; ``valid`` is None when the
    split leaves nothing to validate. A run config's database carries its ``spec`` and the
    isolated-atom frames of ``path``, left out of both datasets (see
    :mod:`sevenomni.data.isolated_atoms`). ``channels`` are the model outputs a scoring pass
    evaluates ``valid`` on (:class:`sevenomni.analysis.evaluate.Channel`), ``skipped`` notes on
    those it left out.
    """

    name: str
    path: str | list[str]
    own: str | None
    task_index: int
    index: int
    train: LMDBDataset
    valid: LMDBDataset | None
    spec: DatabaseSpec | None = None
    isolated: IsolatedAtoms = field(default_factory=IsolatedAtoms)
    channels: list = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @classmethod
    def validation_only(
        cls,
        name: str,
        path: str | list[str],
        store: str | os.PathLike,
        cutoff: float,
        own: str | None,
        task_index: int,
        index: int,
        spec: DatabaseSpec | None = None,
        isolated: IsolatedAtoms | None = None,
    ) -> Database:
        """A database no stage trains on: all of ``store`` but its ``isolated`` frames validates."""
        isolated = isolated or IsolatedAtoms()
        weights = None if spec is None else spec.config_type_weights

        def dataset(indices: np.ndarray | None) -> LMDBDataset:
            return LMDBDataset(store, cutoff, task_index, index, indices, weights)

        train, valid = dataset(np.arange(0)), dataset(kept_indices([store], isolated.indices))
        return cls(name, path, own, task_index, index, train, valid, spec, isolated)


def resolve_store(
    paths: list[str],
    cache_dir: str | os.PathLike,
    name: str,
    *,
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
    min_distance: float = DEFAULT_MIN_DISTANCE,
    baseline: BaselineSpec | None = None,
    skip_bad: bool = False,
    progress: bool = False,
    create: bool = True,
    barrier: Callable[[], None] | None = None,
) -> Path:
    """The store of database ``name``'s ``paths``: the store itself, or a cached ingest of raw files
    (:func:`sevenomni.data.ingest.cached_store`, with the label keys and checks given).

    Under torchrun only the main process ingests (``create``); every process then waits at
    ``barrier`` for the store to exist.
    """
    if len(paths) == 1 and is_store(paths[0]):
        return Path(paths[0])
    if any(is_store(p) for p in paths):
        raise ValueError(f"database {name!r}: give one store or raw files, not a mix: {paths}")
    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"database {name!r}: {path} does not exist")
    (store,) = cached_store(
        paths,
        cache_dir,
        energy_key=energy_key,
        forces_key=forces_key,
        stress_key=stress_key,
        skip_bad=skip_bad,
        min_distance=min_distance,
        progress=progress,
        name=name,
        create=create,
        baseline=baseline,
    )
    if barrier is not None:
        barrier()
    return Path(store)


def open_databases(
    specs: Sequence[DatabaseSpec],
    tasks: Sequence[str],
    cutoff: float,
    cache_dir: str | os.PathLike,
    trained: Collection[str],
    *,
    create: bool = True,
    barrier: Callable[[], None] | None = None,
) -> list[Database]:
    """One :class:`Database` per spec: its store resolved (:func:`resolve_store`) and split
    (:func:`sevenomni.data.dataset.database_datasets`).

    ``tasks`` are the run's task names in channel order (:class:`sevenomni.nn.Tasks` matches them
    case-insensitively). A database that no stage trains on (not in ``trained``: a test set) is
    validation-only: all of it validates. Isolated-atom frames neither train nor validate.
    ``create`` and ``barrier``: see :func:`resolve_store`.
    """
    databases = []
    for index, spec in enumerate(specs):
        if spec.task not in tasks:
            raise ValueError(f"database {spec.name!r} has task {spec.task!r}, which no stage trains: {tasks}")
        task_index = tasks.index(spec.task)
        own = tasks[task_index]
        store = spec_store(spec, spec.paths, cache_dir, create, barrier)
        isolated = isolated_atoms_of([store], spec.name)
        if spec.name not in trained:
            databases.append(
                Database.validation_only(spec.name, spec.path, store, cutoff, own, task_index, index, spec, isolated)
            )
            continue
        valid_stores = valid_exclude = None
        if spec.split.valid_path is not None:
            valid_stores = [spec_store(spec, spec.split.valid_paths, cache_dir, create, barrier)]
            valid_exclude = isolated_atoms_of(valid_stores, spec.name).indices
        train, valid = database_datasets(
            spec, [store], cutoff, task_index, index, valid_stores=valid_stores,
            exclude=isolated.indices, valid_exclude=valid_exclude,
        )
        databases.append(Database(spec.name, spec.path, own, task_index, index, train, valid, spec, isolated))
    return databases


def spec_store(
    spec: DatabaseSpec, paths: list[str], cache_dir: str | os.PathLike, create: bool, barrier: Callable[[], None] | None
) -> Path:
    """The store of ``paths`` (``spec.path`` or its ``split.valid_path``), ingested with ``spec``'s settings."""
    return resolve_store(
        paths, cache_dir, spec.name, energy_key=spec.energy_key, forces_key=spec.forces_key,
        stress_key=spec.stress_key, min_distance=spec.min_distance, baseline=spec.baseline,
        create=create, barrier=barrier,
    )


def isolated_atoms_of(stores: list[Path], name: str) -> IsolatedAtoms:
    """The isolated-atom frames of database ``name``'s ``stores``."""
    readers = [StoreReader(path) for path in stores]
    try:
        return find_isolated_atoms(readers, f"database {name!r}")
    finally:
        for reader in readers:
            reader.close()
