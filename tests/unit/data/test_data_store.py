"""The LMDB store: round trip, sidecar arrays, atomic writes, corruption detection."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import lmdb
import numpy as np
import pytest
from data_helpers import records

from sevenomni.cli import main
from sevenomni.data.store import (
    CorruptRecordError,
    StoreError,
    StoreReader,
    StoreWriter,
    record_key,
    write_store,
)


def test_round_trip_every_field(tmp_path):
    items = records(12)
    meta = write_store(items, tmp_path / "store")
    reader = StoreReader(tmp_path / "store")
    assert len(reader) == 12 and meta["count"] == 12
    for i, record in enumerate(items):
        read = reader.read(i)
        np.testing.assert_array_equal(read["numbers"], record.numbers)
        np.testing.assert_array_equal(read["positions"], record.positions)
        np.testing.assert_array_equal(read["cell"], record.cell)
        np.testing.assert_array_equal(read["pbc"], record.pbc)
        assert read["energy"] == record.energy
        np.testing.assert_array_equal(read["forces"], record.forces)
        if record.stress is None:
            assert "stress" not in read
        else:
            np.testing.assert_array_equal(read["stress"], record.stress)
        assert read["config_type"] == record.config_type and read["name"] == record.name
        assert read["source"] == "mem" and read["index"] == i
        assert "charge" not in read and "spin" not in read
    reader.close()


def test_sidecars_and_metadata(tmp_path):
    items = records(30, seed=3)
    items[4].energy = None
    items[5].forces = None
    write_store(items, tmp_path / "s")
    reader = StoreReader(tmp_path / "s")
    np.testing.assert_array_equal(reader.num_atoms, [len(r.numbers) for r in items])
    assert isinstance(reader.num_atoms, np.memmap)
    assert np.isnan(reader.energies[4]) and reader.energies[3] == items[3].energy
    assert reader.label_flags[5] & 2 == 0 and reader.label_flags[6] & 2
    counts = reader.element_counts([0, 7])
    for row, i in zip(counts, [0, 7]):
        np.testing.assert_array_equal(row, np.bincount(items[i].numbers, minlength=119))
    meta = reader.metadata
    assert meta["labels"]["energy"] == 29 and meta["labels"]["forces"] == 29
    assert meta["labels"]["stress"] == sum(r.stress is not None for r in items)
    assert sum(meta["elements"].values()) == sum(len(r.numbers) for r in items) == meta["num_atoms"]["total"]
    forces = np.concatenate([r.forces.ravel() for r in items if r.forces is not None])
    assert meta["force_rms"] == pytest.approx(np.sqrt(np.mean(forces**2)))
    assert meta["units"]["energy"] == "eV" and meta["version"] == 1


def test_failed_write_leaves_nothing(tmp_path):
    def broken():
        yield from records(5)
        raise RuntimeError("reader died")

    with pytest.raises(RuntimeError):
        write_store(broken(), tmp_path / "store")
    assert os.listdir(tmp_path) == []


def test_killed_write_is_never_a_store(tmp_path):
    writer = StoreWriter(tmp_path / "store")
    for record in records(5):
        writer.add(record)
    writer.txn.commit()  # records durable, but no metadata: as if killed before commit()
    writer.env.close()
    (partial,) = os.listdir(tmp_path)
    assert partial.startswith("store.partial-") and not (tmp_path / "store").exists()
    with pytest.raises(StoreError, match="incomplete"):
        StoreReader(tmp_path / partial)


def test_existing_store_needs_overwrite(tmp_path):
    write_store(records(3), tmp_path / "s")
    with pytest.raises(StoreError, match="already exists"):
        write_store(records(4), tmp_path / "s")
    write_store(records(4), tmp_path / "s", overwrite=True)
    assert len(StoreReader(tmp_path / "s")) == 4
    assert sorted(os.listdir(tmp_path)) == ["s"]


def test_corrupted_record_is_detected(tmp_path):
    write_store(records(3), tmp_path / "s")
    env = lmdb.open(str(tmp_path / "s"), subdir=True)
    with env.begin(write=True) as txn:
        raw = bytearray(txn.get(record_key(1)))
        raw[70] ^= 0xFF
        txn.put(record_key(1), bytes(raw))
        txn.put(record_key(2), txn.get(record_key(2))[:-3])
    env.close()
    reader = StoreReader(tmp_path / "s")
    reader.read(0)
    with pytest.raises(CorruptRecordError, match=r"record 1: checksum"):
        reader.read(1)
    with pytest.raises(CorruptRecordError, match=r"record 2: record has"):
        reader.read(2)
    with pytest.raises(IndexError):
        reader.read(3)


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        StoreReader(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="not a sevenomni store"):
        StoreReader(tmp_path / "empty")


def test_two_readers_share_one_environment(tmp_path):
    write_store(records(3), tmp_path / "s")
    first, second = StoreReader(tmp_path / "s"), StoreReader(tmp_path / "s")
    first.close()
    assert second.read(2)["name"] == "s2"
    assert first.read(1)["name"] == "s1"  # reopens lazily


# -- damaged store files: a one-line error naming the file, never a crash ----------------------


def damage(path: Path, how: str) -> None:
    data = path / "data.mdb"
    if how == "truncated":
        os.truncate(data, data.stat().st_size // 2)
    elif how == "empty":
        os.truncate(data, 0)
    elif how == "meta_pages":
        with open(data, "r+b") as handle:
            for page in (0, 4096):
                handle.seek(page + 16)
                handle.write(b"\xff" * 64)
    elif how == "sidecar":
        os.truncate(path / "natoms.npy", 200)
    elif how == "short_sidecar":
        np.save(path / "energy.npy", np.load(path / "energy.npy")[:-1])


READ_EVERY_RECORD = """
import sys
from sevenomni.data.store import StoreError, StoreReader
try:
    reader = StoreReader(sys.argv[1])
    for i in range(len(reader)):
        reader.read(i)
except StoreError as error:
    sys.exit(f"StoreError: {error}")
"""


def test_truncated_store_is_an_error_not_a_crash(tmp_path):
    """Mapping a truncated data.mdb used to kill the process with SIGBUS (exit 135): run it in children."""
    write_store(records(400), tmp_path / "s")
    damage(tmp_path / "s", "truncated")
    info = subprocess.run([sys.executable, "-m", "sevenomni.cli", "data", "info", str(tmp_path / "s")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert info.returncode == 2, info.stderr
    (line,) = info.stderr.strip().splitlines()
    assert line.startswith(f"sevenomni data: error: {tmp_path / 's' / 'data.mdb'}: truncated")
    read = subprocess.run([sys.executable, "-c", READ_EVERY_RECORD, str(tmp_path / "s")], capture_output=True,
                          text=True, timeout=300, check=False)
    assert read.returncode == 1 and read.stderr.startswith("StoreError: ") and "truncated" in read.stderr


@pytest.mark.parametrize("how, file, message", [
    ("empty", "data.mdb", "not an LMDB file"),
    ("meta_pages", "data.mdb", "not an LMDB file (meta page 0 is damaged)"),
    ("sidecar", "natoms.npy", "damaged sidecar array"),
    ("short_sidecar", "energy.npy", "expected float64 (400,)"),
])
def test_damaged_store_files_are_named(tmp_path, capsys, how, file, message):
    write_store(records(400), tmp_path / "s")
    damage(tmp_path / "s", how)
    assert main(["data", "info", str(tmp_path / "s")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"sevenomni data: error: {tmp_path / 's' / file}: ") and message in line
    with pytest.raises(StoreError, match=re.escape(message)):
        StoreReader(tmp_path / "s")


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_store_permissions_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_store(records(3), tmp_path / "s")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "s").stat().st_mode) == 0o777 & ~umask
    for file in (tmp_path / "s").iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o666 & ~umask, file.name
