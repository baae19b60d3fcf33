"""Issue 26, hostile inputs round two: each crafted file, cell or setting ends in a named one-line error.

One section per numbered case of the issue; the random version of these probes is
``test_fuzz_hostile_inputs.py``.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zipfile
import zlib
from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import write
from conftest import REPO, make_model
from data_helpers import records
from training_helpers import make_run, write_config

from sevenomni import CheckpointError, SevenOmniCalculator, load_model, save_checkpoint
from sevenomni.calculators.prediction import PredictionError
from sevenomni.cli import main
from sevenomni.core.keys import ENERGY
from sevenomni.data.dataset import LMDBDataset
from sevenomni.data.graph import StructureError
from sevenomni.data.ingest import ingest
from sevenomni.data.readers import InvalidRecordError, SourceError
from sevenomni.data.store import (
    METADATA_KEY,
    CorruptRecordError,
    Record,
    StoreError,
    StoreReader,
    record_key,
    sealed,
    write_store,
)

TINY_TEST_SET = REPO / "recipes" / "data" / "tiny" / "test_crystal_gfn1.extxyz"


# --------------------------------------------------------------------------------------------
# 1. Periodic cells too thin or too long for the neighbour search
# --------------------------------------------------------------------------------------------
HOSTILE_CELLS = {"thin": (2.3, 1e4, 1e4), "long": (3.0, 3.0, 1e6), "thinner": (0.2, 1e4, 1e4)}


def si2(cell) -> Atoms:
    return Atoms("Si2", positions=[[0.0, 0.0, 0.0], [1.1, 1.1, 1.1]], cell=cell, pbc=True)


@pytest.mark.parametrize("cell", list(HOSTILE_CELLS.values()), ids=list(HOSTILE_CELLS))
def test_the_calculator_refuses_a_cell_beyond_the_neighbour_search_limits(model64, cell):
    atoms = si2(cell)
    atoms.calc = SevenOmniCalculator(model64, task="crystal", device="cpu")
    with pytest.raises(PredictionError, match=r"structure 0 \(Si2\): too large a cell for a cutoff of 4 Å.*at most 100,000"):
        atoms.get_potential_energy()


def test_the_calculator_refuses_a_cell_with_too_many_periodic_images(model64):
    atoms = si2((0.01, 3.0, 3.0))
    atoms.calc = SevenOmniCalculator(model64, task="crystal", device="cpu")
    with pytest.raises(PredictionError, match=r"too thin a periodic cell.*0\.01.*at most 10,000"):
        atoms.get_potential_energy()


def test_ingest_rejects_a_cell_beyond_the_limits_with_a_reason_code(tmp_path):
    atoms = [si2((5.43, 5.43, 5.43)), si2(HOSTILE_CELLS["thin"])]
    for a in atoms:
        a.info["REF_energy"] = -10.0
    write(tmp_path / "cells.extxyz", atoms)
    with pytest.raises(InvalidRecordError, match=r"record 1: too large a cell .* \[bad_cell\]"):
        ingest(tmp_path / "cells.extxyz", tmp_path / "store")
    report = ingest(tmp_path / "cells.extxyz", tmp_path / "store", skip_bad=True)
    assert report.count == 1 and report.skipped == {"bad_cell": 1}


def test_graph_building_refuses_a_stored_cell_beyond_the_limits_naming_the_record(tmp_path):
    """A store written past ingest's validation (or for a smaller cutoff) still never reaches vesin."""
    hostile = si2(HOSTILE_CELLS["long"])
    record = Record(numbers=hostile.numbers, positions=hostile.positions, cell=hostile.cell.array,
                    pbc=hostile.pbc, energy=-1.0)
    write_store([record], tmp_path / "store")
    dataset = LMDBDataset(tmp_path / "store", cutoff=5.0, task_index=0, database_index=0)
    with pytest.raises(StructureError, match=r"store: record 0: too large a cell"):
        dataset[0]


# --------------------------------------------------------------------------------------------
# 2. A model file whose config describes a bigger network than its weights
# --------------------------------------------------------------------------------------------
def rewrite_record(path: Path, **config_changes) -> None:
    record = torch.load(path, weights_only=True)
    record["config"].update(config_changes)
    torch.save(record, path)


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "model.pt"
    save_checkpoint(make_model(), path)
    return path


def test_a_size_hyperparameter_beyond_its_cap_is_refused_before_building(model_file):
    rewrite_record(model_file, num_layers=3000, avg_num_neighbors=6.0)
    with pytest.raises(CheckpointError, match=r"invalid model config: config.num_layers: Input should be less than or equal to 32$"):
        load_model(model_file)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_layers": 20}, r"num_layers 20, the weights hold 2 layer\(s\)"),
        ({"channels": 1024}, r"species_embedding\.weight has shape \(40,\), the config needs \(5120,\)"),
        ({"radial_mlp": [1024, 1024]}, r"radial network has 3 layers, the weights' layer 0 2"),
        ({"num_radial": 128}, r"radial_net\.layer0\.weight has shape \(8, 16\)"),
    ],
)
def test_a_config_that_disagrees_with_the_weights_is_refused_before_building(model_file, change, message, monkeypatch):
    import sevenomni.model_io.checkpoint as checkpoint

    def no_building(config):
        raise AssertionError("the model was built before the weights were compared")

    rewrite_record(model_file, **change)
    monkeypatch.setattr(checkpoint, "SevenOmniModel", no_building)
    with pytest.raises(CheckpointError, match=message):
        load_model(model_file)


# --------------------------------------------------------------------------------------------
# 3. (and 6.) Compressed, oversized or oddly compressed zip members
# --------------------------------------------------------------------------------------------
def recompress(path: Path, member_name: str) -> None:
    """Rewrite the archive with ``member_name`` deflated (as a compression bomb would be)."""
    with zipfile.ZipFile(path) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in members:
            method = zipfile.ZIP_DEFLATED if info.filename.endswith(member_name) else zipfile.ZIP_STORED
            archive.writestr(info.filename, data, compress_type=method)


def patch_central_directory(path: Path, field_offset: int, fmt: str, value: int) -> None:
    """Overwrite one field of the first member's central-directory entry."""
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02")
    struct.pack_into(fmt, data, entry + field_offset, value)
    path.write_bytes(bytes(data))


def test_a_compressed_member_is_refused_unread(model_file):
    recompress(model_file, "data.pkl")
    with pytest.raises(CheckpointError, match=r"data\.pkl is compressed \(method 8\).*refused unread"):
        load_model(model_file)


def test_a_member_larger_than_the_file_is_refused_unread(model_file):
    patch_central_directory(model_file, 24, "<I", 3 << 30)  # uncompressed size: 3 GiB
    with pytest.raises(CheckpointError, match=r"claims 3,221,225,472 bytes, more than the file holds"):
        load_model(model_file)


def test_an_unknown_compression_method_is_a_checkpoint_error(model_file):
    patch_central_directory(model_file, 10, "<H", 99)
    with pytest.raises(CheckpointError, match=r"model\.pt: member .* is compressed \(method 99\)"):
        load_model(model_file)


# --------------------------------------------------------------------------------------------
# 4. Store records: the checksum covers the header; header values and sidecars are checked
# --------------------------------------------------------------------------------------------
ENERGY_OFFSET = 20  # of the energy in a record's header


def edit_record(store: Path, index: int, edit) -> None:
    env = lmdb.open(str(store), subdir=True)
    with env.begin(write=True) as txn:
        raw = bytearray(txn.get(record_key(index)))
        txn.put(record_key(index), bytes(edit(raw)))
    env.close()


def flip_energy_bit(raw: bytearray) -> bytearray:
    raw[ENERGY_OFFSET + 6] ^= 0x10  # an exponent bit: -911.5 eV becomes another finite energy
    return raw


@pytest.fixture
def store(tmp_path) -> Path:
    write_store(records(12), tmp_path / "store")
    return tmp_path / "store"


def test_a_flipped_bit_in_a_record_header_is_a_checksum_error_also_on_re_ingest(store, tmp_path):
    edit_record(store, 5, flip_energy_bit)
    reader = StoreReader(store)
    with pytest.raises(CorruptRecordError, match=r"store: record 5: checksum mismatch"):
        reader.read(5)
    with pytest.raises(CorruptRecordError, match=r"store: record 5: checksum mismatch"):
        ingest(store, tmp_path / "copy")
    assert not (tmp_path / "copy").exists()


def test_a_non_finite_header_value_is_a_named_error_at_read(store):
    def nan_energy(raw: bytearray) -> bytes:
        struct.pack_into("<d", raw, ENERGY_OFFSET, float("nan"))
        return sealed(bytes(raw))  # as a crafted record would: its checksum matches

    edit_record(store, 5, nan_energy)
    with pytest.raises(CorruptRecordError, match=r"record 5: non-finite energy in a stored record"):
        StoreReader(store).read(5)
    dataset = LMDBDataset(store, cutoff=4.0, task_index=0, database_index=0)
    with pytest.raises(CorruptRecordError, match="non-finite energy"):
        dataset[5]


def test_records_of_version_1_are_still_read(store):
    def version_1(raw: bytearray) -> bytes:
        raw[2] = 1
        struct.pack_into("<I", raw, 48, zlib.crc32(bytes(raw[56:])))  # version 1: the payload's checksum
        return bytes(raw)

    expected = StoreReader(store).read(3)
    edit_record(store, 3, version_1)
    assert StoreReader(store).read(3)[ENERGY] == expected[ENERGY]
    edit_record(store, 3, flip_energy_bit)  # version 1 does not cover the header: the energy sidecar does
    with pytest.raises(StoreError, match=r"energy\.npy: disagrees with record 3"):
        StoreReader(store)


def edit_sidecar(store: Path, name: str, edit) -> None:
    array = np.load(store / f"{name}.npy")
    edit(array)
    np.save(store / f"{name}.npy", array)


@pytest.mark.parametrize("name, value", [("natoms", 4_000_000_000), ("energy", -5.97e7), ("labels", 0)])
def test_sidecars_that_disagree_with_the_records_are_refused_at_open(store, name, value):
    edit_sidecar(store, name, lambda array: array.fill(value))
    with pytest.raises(StoreError, match=rf"{name}\.npy: disagrees with record 0 .*re-ingest"):
        StoreReader(store)


def test_data_verify_compares_every_record_with_the_sidecars(store, capsys):
    assert main(["data", "verify", str(store)]) == 0
    assert "12 records intact" in capsys.readouterr().out
    original = np.load(store / "natoms.npy")
    edit_sidecar(store, "natoms", lambda array: array.__setitem__(7, 4_000_000_000))  # not in the sample at open
    StoreReader(store)
    assert main(["data", "verify", str(store)]) == 2
    assert re.fullmatch(r"sevenomni data: error: \S+natoms\.npy: disagrees with record 7 .*\n", capsys.readouterr().err)
    np.save(store / "natoms.npy", original)
    edit_record(store, 4, flip_energy_bit)
    assert main(["data", "verify", str(store)]) == 2
    assert "record 4: checksum mismatch" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# 6. Store metadata without the keys readers rely on
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["count", "sources", "num_atoms"])
def test_store_metadata_missing_a_key_is_a_one_line_error(store, key, tmp_path, capsys):
    env = lmdb.open(str(store), subdir=True)
    with env.begin(write=True) as txn:
        metadata = json.loads(txn.get(METADATA_KEY))
        del metadata[key]
        txn.put(METADATA_KEY, json.dumps(metadata).encode())
    env.close()
    for command in (["data", "info", str(store)], ["data", "ingest", str(store), "--out", str(tmp_path / "copy")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert re.fullmatch(rf"sevenomni data: error: \S+data\.mdb: damaged metadata record \({key}: Field required\); "
                            r"re-ingest the store\n", err), err


# --------------------------------------------------------------------------------------------
# 5. Settings checked when the config is loaded, before any data is read
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "assignment, message",
    [
        ("train.best_metric=bogus", r"train\.best_metric: Value error, unknown metric 'bogus'; choose one of energy_mae"),
        ("train.optimizer.lr=.inf", r"train\.optimizer\.lr: Input should be a finite number"),
        ("model.cutoff=.inf", r"model\.cutoff: Input should be a finite number"),
        ("model.cutoff=1e9", r"model\.cutoff: Input should be less than or equal to 50"),
        ("model.channels=100000", r"model\.channels: Input should be less than or equal to 1024"),
        ("train.device=gpu7", r"train\.device: Value error, not a device: 'gpu7'"),
        ("train.optimizer.lr=!!python/object/apply:os.system [echo PWNED]",
         r"^sevenomni train: error: --set train\.optimizer\.lr: not a plain YAML value \(could not determine a constructor"),
    ],
)
def test_a_bad_setting_is_refused_at_load_naming_the_key(tmp_path, capsys, assignment, message):
    raw = make_run(tmp_path, count=4)
    config = write_config(raw, tmp_path / "run.yaml")
    assert main(["train", str(config), "--set", assignment]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err and not Path(raw["train"]["run_dir"]).exists()


def test_every_error_metric_can_pick_the_best_checkpoint():
    from sevenomni.analysis.metrics import ERROR_METRICS, METRICS
    from sevenomni.train.config import TrainSection

    assert set(ERROR_METRICS) < set(METRICS)
    for metric in ERROR_METRICS:
        assert TrainSection(best_metric=metric).best_metric == metric


# --------------------------------------------------------------------------------------------
# 6. OS errors wherever a command writes: one line naming the path
# --------------------------------------------------------------------------------------------
ONE_LINE = r"sevenomni \w+: error: [^\n]*\n"


@pytest.fixture
def blocker(tmp_path) -> Path:
    """A regular file: any path under it cannot be created (whoever runs the tests, root included)."""
    path = tmp_path / "blocker"
    path.write_text("")
    return path


@pytest.mark.parametrize("where", ["train.run_dir", "data.cache_dir"])
def test_an_unwritable_run_or_cache_directory_is_a_one_line_error(tmp_path, capsys, blocker, where):
    raw = make_run(tmp_path, count=4)
    config = write_config(raw, tmp_path / "run.yaml")
    assert main(["train", str(config), "--set", f"{where}={blocker}/sub"]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(ONE_LINE, err) and f"{blocker}/sub" in err, err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="permissions do not bind root")
def test_a_permission_denied_run_directory_is_a_one_line_error(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    raw = make_run(tmp_path, count=4)
    config = write_config(raw, tmp_path / "run.yaml")
    assert main(["train", str(config), "--set", f"train.run_dir={locked}/run"]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(rf"sevenomni train: error: {locked}/run[^\n]*: Permission denied\n", err), err


def test_an_unwritable_ingest_output_is_a_one_line_error(tmp_path, capsys, blocker):
    assert main(["data", "ingest", str(TINY_TEST_SET), "--out", str(blocker / "store")]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(ONE_LINE, err) and str(blocker) in err, err


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_when_saving_a_checkpoint_names_the_file(tmp_path, monkeypatch, capsys):
    import sevenomni.core.files

    monkeypatch.setattr(sevenomni.core.files.os, "fdopen", lambda descriptor, mode, **kw: open("/dev/full", mode, **kw))
    with pytest.raises(OSError, match=r"No space left on device.*model\.pt") as raised:
        save_checkpoint(make_model(), tmp_path / "model.pt")
    assert raised.value.filename == str(tmp_path / "model.pt")
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary file left behind
    raw = make_run(tmp_path, count=4)
    assert main(["train", str(write_config(raw, tmp_path / "run.yaml"))]) == 2
    assert re.fullmatch(r"sevenomni train: error: \S+: No space left on device \(the disk is full\)\n",
                        capsys.readouterr().err)


def test_a_full_disk_during_ingest_says_so(tmp_path, monkeypatch, capsys):
    from sevenomni.data.store import writer as store_module

    def input_output_error(self, record):
        raise lmdb.Error("mdb_put: Input/output error")

    monkeypatch.setattr(store_module.StoreWriter, "_add", input_output_error)
    full = store_module.shutil._ntuple_diskusage(total=1 << 30, used=1 << 30, free=0)
    monkeypatch.setattr(store_module.shutil, "disk_usage", lambda path: full)
    assert main(["data", "ingest", str(TINY_TEST_SET), "--out", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"sevenomni data: error: \S+store: cannot write the store: the disk is full "
                        r"\(Error: mdb_put: Input/output error\); nothing was written there\n", err), err
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# 7. Planted links, stale partial stores, messages that name their object
# --------------------------------------------------------------------------------------------
def test_a_link_planted_where_the_metrics_are_rewritten_is_never_followed(tmp_path):
    from sevenomni.train.metric_log import append_csv_row

    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    metrics = tmp_path / "train.csv"
    append_csv_row(metrics, {"step": 1})
    (tmp_path / ".train.csv.tmp").symlink_to(victim)
    append_csv_row(metrics, {"step": 2, "loss": 0.5})  # a new column: the file is rewritten
    assert victim.read_text() == "precious\n"
    assert metrics.read_text().splitlines() == ["step,loss", "1,", "2,0.5"]


def test_ingest_removes_the_partial_stores_of_killed_writers_only(tmp_path):
    import fcntl

    from sevenomni.data.store import StoreWriter

    killed = StoreWriter(tmp_path / "store")  # a writer that died: its lock is released
    os.close(killed.lock)
    alive = StoreWriter(tmp_path / "store", overwrite=True)  # a writer still at work
    legacy = tmp_path / "store.partial-0123456789ab"  # an older sevenomni's (no lock): unknown, kept
    legacy.mkdir()
    report = ingest(TINY_TEST_SET, tmp_path / "store", overwrite=True)
    assert report.count > 0
    assert not killed.tmp.exists() and alive.tmp.exists() and legacy.exists()
    descriptor = os.open(alive.tmp / ".writer.lock", os.O_RDWR)
    with pytest.raises(BlockingIOError):
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(descriptor)
    alive.abort()
    assert not alive.tmp.exists()


def test_a_binary_or_utf16_input_is_named_in_its_decode_error(tmp_path, capsys):
    path = tmp_path / "utf16.xyz"
    path.write_bytes("2\nSi2\nSi 0 0 0\nSi 1 1 1\n".encode("utf-16"))
    assert main(["data", "ingest", str(path), "--out", str(tmp_path / "store")]) == 2
    assert capsys.readouterr().err == (
        f"sevenomni data: error: {path}: not UTF-8 text (invalid start byte at byte 0 of a line; "
        "a binary or UTF-16 file?)\n"
    )


def test_a_negative_atom_count_names_its_record_and_line(tmp_path):
    path = tmp_path / "negative.extxyz"
    path.write_text('1\nProperties=species:S:1:pos:R:3 energy=-1.0\nSi 0 0 0\n-3\ncomment\n')
    with pytest.raises(SourceError, match=r"negative\.extxyz: record 1 \(line 4\): expected an atom count, got '-3'"):
        ingest(path, tmp_path / "store")


def test_a_structure_without_atoms_is_named_by_its_index(model64):
    from sevenomni import predict

    with pytest.raises(PredictionError, match=r"^structure 1: has no atoms$"):
        list(predict(model64, [si2((5.43, 5.43, 5.43)), Atoms()], task="crystal", device="cpu"))


def test_eval_names_a_hostile_cell_found_by_a_dataloader_worker(tmp_path, capsys):
    """A store written for a larger cutoff (or past ingest) reaches the worker that builds graphs."""
    hostile = si2(HOSTILE_CELLS["long"])
    record = Record(numbers=hostile.numbers, positions=hostile.positions, cell=hostile.cell.array,
                    pbc=hostile.pbc, energy=-1.0)
    write_store([record], tmp_path / "store")
    save_checkpoint(make_model(tasks=("gfn1",)), tmp_path / "model.pt")
    argv = ["eval", str(tmp_path / "model.pt"), str(tmp_path / "store"), "--workers", "1", "--out", str(tmp_path / "eval")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"sevenomni eval: error: \S+store: record 0: too large a cell for a cutoff of 4 Å[^\n]*\n", err), err
