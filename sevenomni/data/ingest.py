"""Ingest source files of any supported format into one store, streaming and atomically.

Memory stays flat in input size: records flow reader → writer one by one. With ``workers > 1``,
up to that many files are read at once by worker processes, each into a spool file on disk
beside ``out`` (removed afterwards); the writer copies the spools in file order, so the store is
identical for any number of workers. Parallelism is across files: split a huge single file to
use it. Nothing appears at ``out`` unless the whole ingest succeeds.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import pickle
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress

from sevenomni.core.base import DEFAULT_MIN_DISTANCE
from sevenomni.core.baseline import Baseline, BaselineError, BaselineSpec
from sevenomni.core.keys import ENERGY, FORCES, STRESS
from sevenomni.data.readers import (
    LabelKeys,
    Rejected,
    SourceError,
    count_hint,
    expand_sources,
    read_source,
)
from sevenomni.data.readers.common import BASELINE_FAILED
from sevenomni.data.spec import path_list
from sevenomni.data.store import (
    EncodedRecord,
    Record,
    StoreError,
    StoreWriter,
    is_store,
    prepare_record,
)

_CHUNK = 256
_MAX_EXAMPLES = 20


class IngestError(ValueError):
    """Ingest failed (bad record without --skip-bad, unreadable source, nothing valid); ``skipped``
    counts the records skipped by reason."""

    def __init__(self, message: str, skipped: dict[str, int] | None = None) -> None:
        super().__init__(message)
        self.skipped = dict(skipped or {})


@dataclass
class IngestReport:
    out: str
    count: int
    skipped: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        rate = self.count / self.seconds if self.seconds > 0 else float("nan")
        lines = [f"wrote {self.count} structures from {len(self.sources)} file(s) to {self.out} "
                 f"in {self.seconds:.1f} s ({rate:.0f} structures/s)"]
        if self.skipped:
            reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(self.skipped.items()))
            lines.append(f"skipped {self.num_skipped} bad record(s): {reasons}")
        return "\n".join(lines)


def subtract_baseline(record: Record, baseline: Baseline) -> Record | Rejected:
    """The record with the baseline's energy, forces and stress subtracted from its labels (Δ targets);
    Rejected (``baseline_failed``) if the baseline cannot compute the structure."""
    atoms = Atoms(numbers=record.numbers, positions=record.positions, cell=record.cell, pbc=record.pbc)
    try:
        result = baseline(atoms, stress=record.stress is not None)
    except BaselineError as error:
        return Rejected(record.source, record.index, BASELINE_FAILED, str(error))
    origin = {label: f"{where} - {baseline.spec.label}" for label, where in (record.origin or {}).items()}
    return replace(
        record,
        energy=None if record.energy is None else record.energy - result[ENERGY],
        forces=None if record.forces is None else record.forces - result[FORCES],
        stress=None if record.stress is None else record.stress - voigt_6_to_full_3x3_stress(result[STRESS]),
        origin=origin,
    )


def _chunks(
    path: Path, format: str, keys: LabelKeys, baseline: BaselineSpec | None = None
) -> Iterator[list[Record | Rejected]]:
    subtracted = Baseline(baseline) if baseline is not None else None
    chunk: list[Record | Rejected] = []
    for item in read_source(path, format, keys):
        if subtracted is not None and isinstance(item, Record):
            item = subtract_baseline(item, subtracted)
        chunk.append(item)
        if len(chunk) >= _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _worker(path: Path, format: str, keys: LabelKeys, baseline: BaselineSpec | None, spool: Path) -> None:
    """Read one file into a spool of pickled chunks; on failure write the message to ``.err``."""
    try:
        with open(spool, "wb") as handle:
            for chunk in _chunks(path, format, keys, baseline):
                encoded = [item if isinstance(item, Rejected) else prepare_record(item) for item in chunk]
                pickle.dump(encoded, handle, protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException as error:  # noqa: BLE001 - reported by the parent, which raises
        message = str(error) if isinstance(error, ValueError) else f"{path}: {type(error).__name__}: {error}"
        spool.with_suffix(".err").write_text(message)
        raise SystemExit(1) from None


def _read_spool(spool: Path) -> Iterator[list[Record | EncodedRecord | Rejected]]:
    with open(spool, "rb") as handle:
        while True:
            try:
                yield pickle.load(handle)
            except EOFError:
                return


def _parallel(
    files: list[tuple[Path, str]], keys: LabelKeys, baseline: BaselineSpec | None, workers: int, scratch: Path
) -> Iterator[list[Record | EncodedRecord | Rejected]]:
    """Read up to ``workers`` files at once, each into its own spool file on disk (so a worker
    never waits for the writer, and memory stays flat); yield the spools' chunks in file order."""
    context = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    spool_dir = Path(tempfile.mkdtemp(prefix=scratch.name + ".spool-", dir=scratch.parent))
    processes: dict[int, Any] = {}
    started = 0

    def start_more() -> None:
        nonlocal started
        while started < len(files) and sum(p.is_alive() for p in processes.values()) < workers:
            process = context.Process(
                target=_worker, args=(*files[started], keys, baseline, spool_dir / f"{started}.pkl"), daemon=True
            )
            process.start()
            processes[started] = process
            started += 1

    try:
        for current in range(len(files)):
            start_more()
            process = processes[current]
            while process.is_alive():
                process.join(timeout=0.2)
                start_more()
            error = spool_dir / f"{current}.err"
            if error.exists():
                raise SourceError(error.read_text())
            if process.exitcode != 0:
                raise IngestError(f"{files[current][0]}: reader process died (exit code {process.exitcode})")
            spool = spool_dir / f"{current}.pkl"
            for number, chunk in enumerate(_read_spool(spool)):
                yield chunk
                if number % 16 == 0:
                    start_more()
            spool.unlink()
            del processes[current]
    finally:
        for process in processes.values():
            if process.is_alive():
                process.terminate()
            process.join()
        shutil.rmtree(spool_dir, ignore_errors=True)


def _progress(total: int | None, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit=" structures", disable=not enabled, dynamic_ncols=True, mininterval=0.5)


def ingest(
    sources: Iterable[str | os.PathLike] | str | os.PathLike,
    out: str | os.PathLike,
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
    skip_bad: bool = False,
    workers: int = 1,
    *,
    format: str = "auto",
    require_energy: bool = True,
    min_distance: float = DEFAULT_MIN_DISTANCE,
    overwrite: bool = False,
    progress: bool = False,
    baseline: BaselineSpec | None = None,
) -> IngestReport:
    """Read ``sources`` (files, ``.aselmdb`` directories, stores) into a new store at ``out``.

    Label keys: ``None`` means each format's default (extxyz/ASE: ``REF_energy``,
    ``REF_forces``, ``REF_stress``, else the attached calculator's results; MPtrj, SPICE and
    ``.aselmdb``: their native labels, also when the generic ``REF_*`` names are passed). A key
    that is set never falls back: a record without it is rejected (reason ``missing_label``).
    Where each label came from is counted in the metadata (``StoreReader.label_sources``).
    Records with two atoms nearer than ``min_distance`` Å (periodic images included; 0: no
    check) are bad (``close_atoms``). A bad record raises :class:`~sevenomni.data.readers.InvalidRecordError` naming the file and
    record index, unless ``skip_bad``: then it is skipped and counted by reason (the counts are
    stored in the metadata under ``"skipped"``). With a ``baseline`` (Δ-learning), the stored
    labels are reference − baseline (a structure the baseline fails on is bad: ``baseline_failed``).
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    files = expand_sources(list(sources), format)
    if not files:
        raise IngestError("no sources given")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    for name, key in (("energy_key", energy_key), ("forces_key", forces_key), ("stress_key", stress_key)):
        if key is not None and not key:
            raise ValueError(f"{name} is empty: give a key, or leave it unset for the format's default")
    if not (math.isfinite(min_distance) and min_distance >= 0):
        raise ValueError(f"min_distance must be a number >= 0 (Å; 0 turns the check off), got {min_distance}")
    keys = LabelKeys(energy_key, forces_key, stress_key, require_energy, min_distance)
    skipped: Counter[str] = Counter()
    examples: list[str] = []
    start = time.perf_counter()
    totals = [count_hint(path, fmt) for path, fmt in files]
    total = sum(totals) if all(t is not None for t in totals) else None
    if workers > 1 and len(files) > 1:
        chunks = _parallel(files, keys, baseline, min(workers, len(files)), Path(out))
    else:
        chunks = (chunk for path, fmt in files for chunk in _chunks(path, fmt, keys, baseline))
    with StoreWriter(out, overwrite=overwrite) as writer, _progress(total, progress) as bar:
        try:
            for chunk in chunks:
                for item in chunk:
                    if isinstance(item, Rejected):
                        if not skip_bad:
                            raise item.error()
                        skipped[item.reason] += 1
                        if len(examples) < _MAX_EXAMPLES:
                            examples.append(str(item.error()))
                        continue
                    writer.add(item)
                bar.update(len(chunk))
                if skipped:
                    bar.set_postfix(skipped=sum(skipped.values()), refresh=False)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        if writer.count == 0:
            raise IngestError(
                f"no valid structures in {', '.join(str(p) for p, _ in files)}"
                + (f" (skipped {sum(skipped.values())}: {dict(skipped)})" if skipped else ""),
                skipped,
            )
        writer.commit({
            "skipped": dict(skipped),
            "skipped_examples": examples,
            "ingest": {
                "inputs": [{"path": str(p), "format": f} for p, f in files],
                "energy_key": energy_key, "forces_key": forces_key, "stress_key": stress_key,
                "require_energy": require_energy, "min_distance": min_distance, "skip_bad": skip_bad,
                "baseline": None if baseline is None else baseline.model_dump(mode="json"),
            },
        })
    return IngestReport(
        out=str(out), count=writer.count, skipped=dict(skipped), examples=examples,
        sources=[str(p) for p, _ in files], seconds=time.perf_counter() - start,
    )


def cached_store(
    paths: str | list[str], cache_dir: str | os.PathLike, *, energy_key: str | None = None,
    forces_key: str | None = None, stress_key: str | None = None, skip_bad: bool = False,
    min_distance: float = DEFAULT_MIN_DISTANCE, workers: int = 1, progress: bool = False,
    name: str = "store", create: bool = True, baseline: BaselineSpec | None = None,
) -> list[str]:
    """Store directories for a database's ``path``: stores as they are, raw files ingested once.

    Raw files are ingested together into ``cache_dir/<name>-<hash>``, keyed by their absolute
    paths, sizes, modification times, the label keys, the validation settings and the Δ-learning
    ``baseline`` (labels are stored minus it), and reused
    while those are unchanged.
    Runs sharing ``cache_dir`` may ingest the same files at once: the first to finish wins and
    the others use its store. ``create=False`` only names the cached store (e.g. on ranks that
    wait for rank 0 to ingest).
    """
    paths = path_list(paths)
    stores = [p for p in paths if is_store(p)]
    raw = [p for p in paths if not is_store(p)]
    if not raw:
        return stores
    fingerprint = []
    for p in raw:
        stat = Path(p).stat()
        fingerprint.append([str(Path(p).resolve()), stat.st_size, stat.st_mtime_ns])
    settings = [fingerprint, energy_key, forces_key, stress_key, skip_bad, min_distance]
    if baseline is not None:  # (no entry without one: stores cached before baselines existed stay valid)
        settings.append(baseline.model_dump(mode="json"))
    key = json.dumps(settings).encode()
    out = Path(cache_dir) / f"{name}-{hashlib.sha256(key).hexdigest()[:16]}"
    if create and not is_store(out):
        try:
            ingest(raw, out, energy_key, forces_key, stress_key, skip_bad=skip_bad, workers=workers,
                   min_distance=min_distance, overwrite=out.exists(), progress=progress, baseline=baseline)
        except StoreError:
            if not is_store(out):  # not a concurrent run's finished store of the same files
                raise
    return stores + [str(out)]
