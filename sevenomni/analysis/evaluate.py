"""Score a model on labelled databases: every database on every requested channel, in one pass.

Each DATA source (any file the data layer reads, or a store) becomes a database: raw files are
ingested once into a cached store (as ``sevenomni train`` does), then read by DataLoader workers
that build the graphs. Every batch is evaluated on all requested channels before the next is
read, so the graphs are built once however many channels are scored.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.io import write as write_structures
from ase.stress import full_3x3_to_voigt_6_stress, voigt_6_to_full_3x3_stress
from torch.utils.data import DataLoader
from tqdm import tqdm

from sevenomni.analysis.config_types import ConfigTypeErrors
from sevenomni.analysis.metrics import ChannelSpread, ErrorAccumulator
from sevenomni.calculators.extrapolation import warn_extrapolation
from sevenomni.core.baseline import Baseline, cached_baseline
from sevenomni.core.devices import resolve_device
from sevenomni.core.keys import ENERGY, FORCES, STRESS
from sevenomni.data.dataset import worker_collate
from sevenomni.data.graph import collate, has_stress
from sevenomni.data.ingest import IngestError
from sevenomni.data.readers.common import MISSING_ENERGY, InvalidRecordError
from sevenomni.data.sources import Database, resolve_store
from sevenomni.data.store import LABEL_ENERGY, LABEL_FORCES, StoreReader
from sevenomni.nn import SevenOmniModel
from sevenomni.nn.task_names import CHANNEL_COLUMN, COMMON_CHANNEL, Tasks

PREDICT_HINT = (
    "`sevenomni eval` scores labelled structures; to predict unlabelled ones, run "
    "`sevenomni predict MODEL {path} --task NAME -o OUT.extxyz`"
)
# Force components kept per database for its parity plot (a strided subsample beyond this).
PARITY_POINTS = 30_000


@dataclass(frozen=True)
class Channel:
    """One output of the model: a task's channel, or the common PES with ``task``'s shifts."""

    name: str
    task_index: int
    common: bool


@dataclass
class Evaluation:
    """Per database and channel: metrics rows, and the parity-plot samples of one channel each;
    with ``by_config_type``, rows per config type of the databases that carry several."""

    rows: list[dict]
    samples: dict[str, tuple[str, dict[str, np.ndarray]]]
    seconds: float
    structures: int
    config_type_rows: list[dict] = field(default_factory=list)


def database_name(path: str | os.PathLike) -> str:
    """A database's name: its file name without format suffixes (a store: its directory name)."""
    name = Path(path).name
    for suffix in (".gz", ".bz2", ".xz"):
        name = name.removesuffix(suffix)
    stem, dot, _ = name.rpartition(".")
    return stem if dot and not Path(path).is_dir() else name


def infer_own_task(name: str, tasks: Sequence[str]) -> str | None:
    """The task a database belongs to: the model's only task, or the one task name that appears
    as a word of the database name (``test_molecule_gfn1`` → ``gfn1``); None if not unique."""
    if len(tasks) == 1:
        return tasks[0]
    tasks = Tasks(tasks)
    matches = {tasks.canonical(word) for word in re.split(r"[^0-9a-z]+", name.lower()) if word in tasks}
    return matches.pop() if len(matches) == 1 else None


def parse_own(pairs: Sequence[str], tasks: Tasks) -> dict[str, str]:
    """``DATABASE=TASK`` pairs (``--own``) to a dict; the task must be one of the model's."""
    own = {}
    for pair in pairs:
        database, equals, task = pair.partition("=")
        if not equals or not database or not task:
            raise ValueError(f"--own expects DATABASE=TASK, got {pair!r}")
        if task not in tasks:
            raise ValueError(f"--own {pair}: unknown task {task!r}; this model's tasks are {tasks}")
        own[database] = tasks.canonical(task)
    return own


def open_sources(
    sources: Sequence[str | os.PathLike],
    model: SevenOmniModel,
    cache_dir: str | os.PathLike,
    own: dict[str, str] | None = None,
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
    skip_bad: bool = False,
    progress: bool = False,
) -> list[Database]:
    """One validation-only :class:`Database` per DATA source (a store as it is, a raw file ingested
    into ``cache_dir``), named by :func:`database_name`, its own task from ``own`` (``--own``) or
    :func:`infer_own_task`."""
    own = dict(own or {})
    databases, names = [], set()
    for source in sources:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or directory")
        name = base = database_name(path)
        suffix = 2
        while name in names:
            name, suffix = f"{base}-{suffix}", suffix + 1
        names.add(name)
        try:
            store = resolve_store(
                [str(path)], cache_dir, name, energy_key=energy_key, forces_key=forces_key, stress_key=stress_key,
                skip_bad=skip_bad, progress=progress,
            )
        except (InvalidRecordError, IngestError) as error:
            if not lacks_energy_labels(error):
                raise
            raise ValueError(f"{error}. {PREDICT_HINT.format(path=path)}") from error
        with StoreReader(store) as reader:
            if not (np.asarray(reader.label_flags) & (LABEL_ENERGY | LABEL_FORCES)).any():
                raise ValueError(f"{path}: no energy or force labels. {PREDICT_HINT.format(path=path)}")
        task = own.pop(name, None) or infer_own_task(name, model.tasks)
        task_index = 0 if task is None else model.task_index(task)
        databases.append(
            Database.validation_only(name, str(path), store, model.cutoff, task, task_index, index=len(databases))
        )
    if own:
        raise ValueError(f"--own names unknown database(s) {sorted(own)}; the databases are {sorted(names)}")
    return databases


def lacks_energy_labels(error: InvalidRecordError | IngestError) -> bool:
    """Whether an ingest failed only for structures without an energy label."""
    reasons = {error.reason} if isinstance(error, InvalidRecordError) else set(error.skipped)
    return reasons == {MISSING_ENERGY}


def choose_channels(database: Database, model: SevenOmniModel, task: str) -> None:
    """Set ``database.channels`` for ``task``: a task name, ``common``, or ``all`` (every task and
    the common PES). The common PES takes the database's own task's shifts; without an own task
    it is skipped under ``all`` (noted in ``database.skipped``) and an error when asked for."""
    def common_channel() -> Channel | None:
        if database.own is None:
            return None
        return Channel(COMMON_CHANNEL, model.task_index(database.own), True)

    if task.lower() == "all":
        database.channels = [Channel(t, i, False) for i, t in enumerate(model.tasks)]
        common = common_channel()
        if common is None:
            database.skipped.append(f"{COMMON_CHANNEL}: own task unknown (give --own {database.name}=TASK)")
        else:
            database.channels.append(common)
        return
    index = model.tasks.channel(task)
    if index is None:
        common = common_channel()
        if common is None:
            raise ValueError(
                f"database {database.name!r}: the common channel needs the task whose energy shifts to use; "
                f"give --own {database.name}=TASK (one of {model.tasks})"
            )
        database.channels = [common]
    else:
        database.channels = [Channel(model.tasks[index], index, False)]


def parity_channel(database: Database) -> Channel | None:
    """The channel whose parity plot is drawn: the own task's, else the only one scored."""
    for channel in database.channels:
        if not channel.common and channel.name == database.own:
            return channel
    return database.channels[0] if len(database.channels) == 1 else None


def batch_structures(batch) -> list[Atoms]:
    """The structures of a collated batch, with their labels as ``REF_energy/forces/stress``."""
    structures = []
    ptr = batch.ptr.tolist()
    for i, (start, stop) in enumerate(pairwise(ptr)):
        atoms = Atoms(
            numbers=batch.atomic_numbers[start:stop].cpu().numpy(),
            positions=batch.pos[start:stop].cpu().numpy(),
            cell=batch.cell[i].cpu().numpy(),
            pbc=batch.pbc[i].cpu().numpy(),
        )
        if bool(batch.has_energy[i]):
            atoms.info["REF_energy"] = float(batch.energy[i])
        if bool(batch.has_forces[i]):
            atoms.arrays["REF_forces"] = batch.forces[start:stop].cpu().numpy()
        if bool(batch.has_stress[i]):
            atoms.info["REF_stress"] = full_3x3_to_voigt_6_stress(batch.stress[i].view(3, 3).cpu().numpy())
        structures.append(atoms)
    return structures


def attach_predictions(structures: list[Atoms], batch, prediction: dict, prefix: str) -> None:
    """Add ``{prefix}_energy``, ``{prefix}_forces`` and (cells with a volume) ``{prefix}_stress``."""
    ptr = batch.ptr.tolist()
    energies = prediction[ENERGY].detach().cpu().double().numpy()
    forces = prediction[FORCES].detach().cpu().double().numpy()
    for i, atoms in enumerate(structures):
        atoms.info[f"{prefix}_energy"] = float(energies[i])
        atoms.arrays[f"{prefix}_forces"] = forces[ptr[i] : ptr[i + 1]]
        if STRESS in prediction and has_stress(atoms):
            stress = prediction[STRESS][i].detach().cpu().double().numpy()
            atoms.info[f"{prefix}_stress"] = full_3x3_to_voigt_6_stress(stress)


@contextlib.contextmanager
def evaluation_mode(model: torch.nn.Module):
    """The model in eval mode for the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def with_baseline(prediction: dict, batch, baseline: Baseline) -> dict:
    """``prediction`` (energy, forces, stress of a batch) plus the baseline's, structure by structure."""
    energy, forces = prediction[ENERGY].detach().clone(), prediction[FORCES].detach().clone()
    stress = prediction[STRESS].detach().clone() if STRESS in prediction else None
    ptr = batch.ptr.tolist()
    for i, atoms in enumerate(batch_structures(batch)):
        added = baseline(atoms, stress=stress is not None and has_stress(atoms))
        energy[i] += added[ENERGY]
        forces[ptr[i] : ptr[i + 1]] += torch.as_tensor(added[FORCES], dtype=forces.dtype, device=forces.device)
        if STRESS in added:
            full = voigt_6_to_full_3x3_stress(added[STRESS])
            stress[i] += torch.as_tensor(full, dtype=stress.dtype, device=stress.device)
    combined = {ENERGY: energy, FORCES: forces}
    if stress is not None:
        combined[STRESS] = stress
    return combined


def evaluate_databases(
    model: SevenOmniModel,
    databases: Sequence[Database],
    batch_size: int = 32,
    workers: int = 0,
    device: str | torch.device = "auto",
    predictions_dir: str | os.PathLike | None = None,
    prefix: str = "sevenomni",
    progress: bool = False,
    add_baselines: bool = True,
    by_config_type: bool = False,
) -> Evaluation:
    """Score every database on its channels (:func:`choose_channels` first).

    With ``predictions_dir``, writes ``<database>.extxyz`` there: each structure with its labels
    (``REF_*``) and, per channel, ``{prefix}_{channel}_energy`` / ``_forces`` / ``_stress``.
    A channel trained by Δ-learning predicts model + baseline against reference labels; with
    ``add_baselines=False`` (labels that are already reference − baseline, as in training
    validation) it is scored as the model alone. With ``by_config_type``, a database whose
    structures carry two or more config types is also scored per type on its own channel (the
    parity channel: its own task's, else its only one).
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    device = resolve_device(device)
    model = model.to(device)
    rows, samples, type_rows = [], {}, []
    total = sum(len(d.valid) for d in databases)
    start = time.perf_counter()
    if predictions_dir is not None:
        Path(predictions_dir).mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=total, unit=" structures", disable=not progress, dynamic_ncols=True, mininterval=0.5)
    with evaluation_mode(model), bar:
        for database in databases:
            bar.set_description(database.name)
            plotted = parity_channel(database)
            atoms_total = int(np.asarray(database.valid.atom_counts).sum())
            every = max(1, -(-3 * atoms_total // PARITY_POINTS))
            errors = {c: ErrorAccumulator(sample_every=every if c == plotted else 0) for c in database.channels}
            own = next((c for c in database.channels if not c.common and c.name == database.own), None)
            spreads = {c: ChannelSpread() for c in database.channels if own is not None and c != own}
            by_type = None
            if by_config_type and plotted is not None:
                by_type = ConfigTypeErrors.when_several(database.valid.config_types())
            loader = DataLoader(
                database.valid, batch_size=batch_size, shuffle=False, num_workers=workers,
                collate_fn=worker_collate if workers else collate,
            )
            for channel in database.channels:
                warn_extrapolation(model, channel.task_index, channel.common, database.valid.elements)
            target = None if predictions_dir is None else Path(predictions_dir) / f"{database.name}.extxyz"
            with open(target, "w") if target is not None else contextlib.nullcontext() as handle:
                for batch in loader:
                    batch = batch.to(device)
                    structures = batch_structures(batch) if handle is not None else None
                    predictions = {}
                    for channel, accumulator in errors.items():
                        batch.task = torch.full_like(batch.task, channel.task_index)
                        prediction = model(
                            batch, common=channel.common, compute_forces=True,
                            compute_stress=bool(batch.pbc.any()), create_graph=False,
                        )
                        spec = model.baseline_of(model.tasks[channel.task_index]) if add_baselines else None
                        if spec is not None:
                            prediction = with_baseline(prediction, batch, cached_baseline(spec))
                        accumulator.add(batch, prediction)
                        if by_type is not None and channel == plotted:
                            by_type.add(batch, prediction)
                        if spreads:
                            predictions[channel] = prediction
                        if structures is not None:
                            attach_predictions(structures, batch, prediction, f"{prefix}_{channel.name}")
                    for channel, spread in spreads.items():
                        spread.add(batch, predictions[channel], predictions[own])
                    if structures is not None:
                        write_structures(handle, structures, format="extxyz")
                    bar.update(int(batch.num_atoms.numel()))
            for channel, accumulator in errors.items():
                spread = spreads[channel].summary() if channel in spreads else ChannelSpread().summary()
                if channel == own:
                    spread = {key: 0.0 for key in spread}
                row = {"database": database.name, "channel": channel.name, "own": channel == own}
                rows.append({**row, **accumulator.summary(), **spread})
            if plotted is not None:
                samples[database.name] = (plotted.name, errors[plotted].samples)
            if by_type is not None:
                type_rows += by_type.rows(database.name, plotted.name)
    return Evaluation(rows, samples, time.perf_counter() - start, total, type_rows)


def format_table(rows: Sequence[dict]) -> str:
    """Rows as a fixed-width table (own channel marked with *)."""
    header = (
        f"{'database':<24}{CHANNEL_COLUMN:<16}{'E MAE':>9}{'E RMSE':>9}{'cMAE':>9}"
        f"{'F MAE':>9}{'F RMSE':>9}{'σ MAE':>10}{'scale':>7}{'spread':>8}"
    )
    units = (
        f"{'':<24}{'':<16}{'meV/at':>9}{'meV/at':>9}{'meV/at':>9}{'eV/Å':>9}{'eV/Å':>9}{'eV/Å³':>10}{'':>7}{'eV/Å':>8}"
    )
    lines = [header, units]
    for row in rows:
        channel = row["channel"] + ("*" if row["own"] else "")
        lines.append(
            f"{row['database']:<24}{channel:<16}{row['energy_mae']:>9.2f}{row['energy_rmse']:>9.2f}"
            f"{row['energy_cmae']:>9.2f}{row['forces_mae']:>9.4f}{row['forces_rmse']:>9.4f}"
            f"{row['stress_mae']:>10.5f}{row['softening_scale']:>7.3f}{row['channel_spread_forces']:>8.4f}"
        )
    lines.append("spread = RMS force difference from the database's own channel, structure by structure (channel_spread)")
    return "\n".join(lines)
