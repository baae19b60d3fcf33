"""Fuzz test of issue 26: random single-bit flips and truncations of a model file, a store and an
extxyz file, random cells and random settings each end in a named error or a correct result.

The cases run in a child process (this file run as a script) with a memory limit and a
per-case alarm, so a signal, a hang or exhausted memory fails the test naming the case instead of
killing pytest. The random generator is seeded: a failing case number reproduces with
``python tests/integration/test_fuzz_hostile_inputs.py --only KIND:NUMBER``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

SEED = 26
CASE_SECONDS = 20  # a case still running after this is a hang (the alarm kills the child)
MEMORY_LIMIT = 4 << 30  # private memory of the child, bytes
COUNTS = {"model": 300, "store": 400, "extxyz": 150, "cell": 250, "setting": 150}
TESTS = Path(__file__).resolve().parents[1]  # the child runs this file as a script: no conftest yet
TINY = TESTS.parent / "recipes" / "data" / "tiny"


def test_random_damage_cells_and_settings_end_in_named_errors_or_correct_results(tmp_path):
    child = subprocess.run(
        [sys.executable, __file__, "--work", str(tmp_path)], capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    results = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
    started = [r["case"] for r in results if "outcome" not in r]
    finished = {r["case"] for r in results if "outcome" in r}
    unfinished = [case for case in started if case not in finished]
    assert child.returncode == 0, (
        f"the fuzz child died (exit {child.returncode}, "
        f"{'signal ' + signal.Signals(-child.returncode).name if child.returncode < 0 else 'error'}) "
        f"in case {unfinished[-1] if unfinished else '?'}:\n{child.stderr[-3000:]}"
    )
    failures = [r for r in results if r.get("outcome") == "failed"]
    assert not failures, "\n\n".join(f"{r['case']}: {r['detail']}" for r in failures[:5])
    assert len(finished) == sum(COUNTS.values())
    outcomes = {r["outcome"] for r in results if "outcome" in r}
    assert {"correct", "named error"} <= outcomes  # the cases reach both ends


# ------------------------------------------------------------------------------------------------
# The child: every case, one JSON line before and one after
# ------------------------------------------------------------------------------------------------
def named_errors() -> tuple[type[Exception], ...]:
    from sevenomni.calculators.prediction import PredictionError
    from sevenomni.data.graph import StructureError
    from sevenomni.data.ingest import IngestError
    from sevenomni.data.readers import InvalidRecordError, SourceError
    from sevenomni.data.store import StoreError
    from sevenomni.model_io.checkpoint import CheckpointError
    from sevenomni.train.config import ConfigError

    return (CheckpointError, StoreError, SourceError, InvalidRecordError, IngestError, PredictionError,
            StructureError, ConfigError)


def flip_bit(data: bytes, rng: np.random.Generator) -> bytes:
    position = int(rng.integers(len(data)))
    damaged = bytearray(data)
    damaged[position] ^= 1 << int(rng.integers(8))
    return bytes(damaged)


def damaged(data: bytes, rng: np.random.Generator) -> bytes:
    """One bit flipped (four cases in five) or the file cut short."""
    return flip_bit(data, rng) if rng.random() < 0.8 else data[: int(rng.integers(len(data)))]


def small_model():
    from conftest import make_model

    return make_model(dtype="float32")


def molecule_and_crystal():
    from ase.build import bulk, molecule

    crystal = bulk("Si", "diamond", a=5.43)
    crystal.rattle(0.05, seed=1)
    return [molecule("CH4"), crystal]


def model_cases(work: Path, rng: np.random.Generator) -> Iterator[Callable[[], None]]:
    from sevenomni import load_model, predict, save_checkpoint

    original = work / "model.pt"
    save_checkpoint(small_model(), original)
    data = original.read_bytes()
    structures = molecule_and_crystal()
    while True:
        mutated = damaged(data, rng)

        def case(mutated=mutated) -> None:
            path = work / "case.pt"
            path.write_bytes(mutated)
            model = load_model(path)
            for result in predict(model, structures, task="crystal", device="cpu"):
                assert np.isfinite(result["energy"])

        yield case


def store_cases(work: Path, rng: np.random.Generator) -> Iterator[Callable[[], None]]:
    from data_helpers import records

    from sevenomni.data.dataset import LMDBDataset
    from sevenomni.data.store import StoreReader, write_store

    original = work / "store"
    write_store(records(6), original)
    files = sorted(p.name for p in original.iterdir() if p.name != "lock.mdb")
    while True:
        name = files[0] if rng.random() < 0.6 else files[int(rng.integers(len(files)))]  # data.mdb: most cases
        mutated = damaged((original / name).read_bytes(), rng)

        def case(name=name, mutated=mutated) -> None:
            store = work / "case-store"
            shutil.rmtree(store, ignore_errors=True)
            shutil.copytree(original, store)
            (store / name).write_bytes(mutated)
            with StoreReader(store) as reader:
                reader.verify()
            dataset = LMDBDataset(store, cutoff=4.0, task_index=0, database_index=0)
            for index in range(len(dataset)):
                assert dataset[index].energy.isfinite().all()

        yield case


def extxyz_cases(work: Path, rng: np.random.Generator) -> Iterator[Callable[[], None]]:
    from ase.io import read, write

    from sevenomni.data.ingest import ingest
    from sevenomni.data.store import StoreReader

    source = TINY / "test_crystal_gfn1.extxyz"
    write(work / "original.extxyz", read(source, index=":4"))
    text = (work / "original.extxyz").read_text()
    while True:
        mutated = damaged(text.encode(), rng)

        def case(mutated=mutated) -> None:
            source, store = work / "case.extxyz", work / "case-from-extxyz"
            source.write_bytes(mutated)
            shutil.rmtree(store, ignore_errors=True)
            ingest(source, store, skip_bad=bool(rng.integers(2)))
            with StoreReader(store) as reader:
                reader.verify()

        yield case


def cell_cases(work: Path, rng: np.random.Generator) -> Iterator[Callable[[], None]]:
    from ase import Atoms

    from sevenomni import predict
    from sevenomni.data.readers import InvalidRecordError, validate_record

    model = small_model()
    while True:
        extreme = rng.random(3) < 0.3
        lengths = np.where(extreme, 10.0 ** rng.uniform(-3, 7, size=3), 10.0 ** rng.uniform(0.2, 1.3, size=3))
        directions = np.eye(3) + rng.normal(scale=rng.choice([0.0, 0.3, 3.0]), size=(3, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        cell = lengths[:, None] * directions
        pbc = rng.integers(2, size=3).astype(bool) if rng.random() < 0.5 else np.ones(3, dtype=bool)
        n = int(rng.integers(1, 9))
        atoms = Atoms(rng.choice(["H", "C", "Si"], size=n), scaled_positions=rng.random((n, 3)), cell=cell, pbc=pbc)

        def case(atoms=atoms) -> None:
            try:  # ingest's validation, then (whatever it says) the calculator's
                validate_record(source="fuzz", index=0, species=atoms.numbers, positions=atoms.positions,
                                cell=atoms.cell.array, pbc=atoms.pbc, require_energy=False)
            except InvalidRecordError as error:
                assert "\n" not in str(error)
            (result,) = predict(model, [atoms], task="crystal", device="cpu")
            assert np.isfinite(result["energy"]) and np.isfinite(result["forces"]).all()

        yield case


SETTING_KEYS = [
    "model.cutoff", "model.num_layers", "model.channels", "model.lmax", "model.num_radial", "model.radial_mlp",
    "model.hidden_irreps", "model.avg_num_neighbors", "model.dtype", "train.optimizer.lr", "train.best_metric",
    "train.device", "train.ema_decay", "train.loss.kind", "train.regularization.strength", "train.schedule.kind",
    "data.sampling.batch_size", "data.sampling.temperature", "data.databases.0.min_distance",
    "data.databases.0.weight", "stages.0.steps", "stages.0.lr", "nonsense.key", "train",
]
SETTING_VALUES = [
    ".inf", "-.inf", ".nan", "-1", "0", "1", "3", "1e308", "1e-300", "3000", "bogus", "null", "true", "''", "[1, 2]",
    "{a: 1}", "!!python/object/apply:os.system [echo PWNED]", "!!binary aGk=", "&a [*a]", "[", "forces_mae",
    "cpu", "cuda:99", "64x0e+8x1o", "e3nn",
]


def setting_cases(work: Path, rng: np.random.Generator) -> Iterator[Callable[[], None]]:
    from training_helpers import make_run, write_config

    from sevenomni.train.config import load_config

    config = write_config(make_run(work, count=4), work / "run.yaml")
    while True:
        assignments = [f"{rng.choice(SETTING_KEYS)}={rng.choice(SETTING_VALUES)}" for _ in range(int(rng.integers(1, 3)))]

        def case(assignments=assignments) -> None:
            load_config(config, assignments)
            assert not (work / "PWNED").exists()

        yield case


KINDS = {"model": model_cases, "store": store_cases, "extxyz": extxyz_cases, "cell": cell_cases,
         "setting": setting_cases}


def run_cases(work: Path, only: str | None) -> None:
    # private memory (heap, anonymous maps): unlike the address space, LMDB's file maps do not count
    resource.setrlimit(resource.RLIMIT_DATA, (MEMORY_LIMIT, MEMORY_LIMIT))
    named = named_errors()
    for kind, make_cases in KINDS.items():
        rng = np.random.default_rng([SEED, list(KINDS).index(kind)])
        directory = work / kind
        directory.mkdir(parents=True, exist_ok=True)
        cases = make_cases(directory, rng)
        for number in range(COUNTS[kind]):
            case = next(cases)
            name = f"{kind}:{number}"
            if only is not None and name != only:
                continue
            print(json.dumps({"case": name}), flush=True)
            signal.alarm(CASE_SECONDS)  # the default action ends the process: a hang is reported
            try:
                case()
                outcome = {"outcome": "correct"}
            except named as error:
                one_line = "\n" not in str(error) or type(error).__name__ == "ConfigError"  # one line per key
                outcome = ({"outcome": "named error", "detail": f"{type(error).__name__}: {error}"} if one_line
                           else {"outcome": "failed", "detail": f"a message of several lines: {error}"})
            except Exception:  # noqa: BLE001 - anything else is a traceback the user would see
                outcome = {"outcome": "failed", "detail": traceback.format_exc()[-2000:]}
            signal.alarm(0)
            print(json.dumps({"case": name, **outcome}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", help="scratch directory (default: a new temporary one)")
    parser.add_argument("--only", metavar="KIND:NUMBER", help="run one case, e.g. store:17")
    arguments = parser.parse_args()
    sys.path.insert(0, str(TESTS))  # conftest and the helpers
    import torch

    torch.set_num_threads(1)
    run_cases(Path(arguments.work or tempfile.mkdtemp(prefix="sevenomni-fuzz-")), arguments.only)
