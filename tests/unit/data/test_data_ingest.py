"""`ingest` and the `sevenomni data` commands: formats mixed, skip-bad counts, atomic failure."""

from __future__ import annotations

import os
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from data_helpers import (
    aselmdb_row,
    crystal,
    extxyz_frame,
    labelled,
    mptrj_frame,
    water_conformations,
    write_aselmdb,
    write_mptrj,
    write_spice,
)

from sevenomni.cli import main
from sevenomni.data.ingest import IngestError, cached_store, ingest
from sevenomni.data.readers import InvalidRecordError, SourceError
from sevenomni.data.store import StoreReader


@pytest.fixture
def mixed_sources(tmp_path):
    frames = [labelled(crystal(i), seed=i) for i in range(5)] + [labelled(molecule("CH4"), seed=7)]
    ase.io.write(tmp_path / "a.extxyz", frames)
    rows = [aselmdb_row(crystal(10 + i), energy=-float(i), forces=np.zeros((2, 3))) for i in range(3)]
    write_aselmdb(tmp_path / "omat.aselmdb", rows)
    write_mptrj(tmp_path / "mptrj.json", {"mp-1": {"mp-1-0-0": mptrj_frame(crystal(20))}})
    sources = [tmp_path / "a.extxyz", tmp_path / "omat.aselmdb", tmp_path / "mptrj.json"]
    try:
        import h5py  # noqa: F401

        sources.append(write_spice(tmp_path / "spice.hdf5", {"w": water_conformations(2)}))
    except ImportError:
        pass
    return sources


def test_ingest_mixed_formats(tmp_path, mixed_sources):
    report = ingest(mixed_sources, tmp_path / "store")
    expected = 6 + 3 + 1 + (2 if len(mixed_sources) == 4 else 0)
    assert report.count == expected and report.skipped == {}
    reader = StoreReader(tmp_path / "store")
    assert len(reader) == expected
    assert reader.sources == [str(p) for p in mixed_sources]
    assert reader.read(6)["energy"] == 0.0 and reader.read(6)["source"].endswith("omat.aselmdb")
    meta = reader.metadata
    assert meta["ingest"]["inputs"][2]["format"] == "mptrj" and meta["skipped"] == {}
    assert meta["label_origin"]["energy"]["info:REF_energy"] == 6


def test_parallel_ingest_writes_the_same_store(tmp_path, mixed_sources):
    ingest(mixed_sources, tmp_path / "one")
    before = set(os.listdir(tmp_path))
    ingest(mixed_sources, tmp_path / "two", workers=2)
    assert set(os.listdir(tmp_path)) - before == {"two"}  # no spool or partial directory left
    one, two = StoreReader(tmp_path / "one"), StoreReader(tmp_path / "two")
    assert len(one) == len(two)
    for i in range(len(one)):
        a, b = one.read(i), two.read(i)
        np.testing.assert_array_equal(a["positions"], b["positions"])
        assert a["source"] == b["source"] and a["index"] == b["index"]


def bad_file(tmp_path):
    path = tmp_path / "bad.extxyz"
    path.write_text(
        extxyz_frame()
        + extxyz_frame(energy="nan")
        + extxyz_frame(species=("H", "Zz"))
        + extxyz_frame()
        + extxyz_frame(energy=None)
        + extxyz_frame(lattice="0 0 0 0 4 0 0 0 4")
    )
    return path


def test_bad_record_aborts_and_leaves_nothing(tmp_path):
    path = bad_file(tmp_path)
    with pytest.raises(InvalidRecordError, match=r"bad.extxyz: record 1: energy is nan"):
        ingest([path], tmp_path / "store")
    assert sorted(os.listdir(tmp_path)) == ["bad.extxyz"]


def test_unreadable_file_in_parallel_ingest(tmp_path, mixed_sources):
    broken = tmp_path / "broken.extxyz"
    broken.write_text(extxyz_frame() + "oops\n")
    before = set(os.listdir(tmp_path))
    with pytest.raises(SourceError, match=r"broken.extxyz: record 1 \(line 5\)"):
        ingest([mixed_sources[0], broken, mixed_sources[1]], tmp_path / "store", workers=2, skip_bad=True)
    assert set(os.listdir(tmp_path)) == before


def test_skip_bad_counts_by_reason_and_stores_counts(tmp_path):
    path = bad_file(tmp_path)
    report = ingest([path], tmp_path / "store", skip_bad=True, workers=2)
    assert report.count == 2
    assert report.skipped == {"non_finite": 1, "unknown_element": 1, "missing_energy": 1, "zero_volume": 1}
    meta = StoreReader(tmp_path / "store").metadata
    assert meta["skipped"] == report.skipped
    assert any("record 2" in example for example in meta["skipped_examples"])


def test_nothing_valid_is_an_error(tmp_path):
    path = tmp_path / "bad.extxyz"
    path.write_text(extxyz_frame(energy="nan"))
    with pytest.raises(IngestError, match="no valid structures"):
        ingest([path], tmp_path / "store", skip_bad=True)
    assert not (tmp_path / "store").exists()


def test_allow_missing_energy(tmp_path):
    path = tmp_path / "e.extxyz"
    path.write_text(extxyz_frame(energy=None))
    ingest([path], tmp_path / "store", require_energy=False)
    reader = StoreReader(tmp_path / "store")
    assert "energy" not in reader.read(0) and reader.metadata["labels"]["energy"] == 0


def test_cli_ingest_and_info(tmp_path, mixed_sources, capsys):
    path = bad_file(tmp_path)
    code = main(["data", "ingest", str(path), "--out", str(tmp_path / "s"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "bad.extxyz: record 1" in err and "sevenomni data: error" in err
    assert main(["data", "ingest", str(path), str(mixed_sources[0]), "--out", str(tmp_path / "s"),
                 "--skip-bad", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "wrote 8 structures" in out and "skipped 4 bad record(s)" in out and "zero_volume 1" in out
    assert main(["data", "info", str(tmp_path / "s")]) == 0
    info = capsys.readouterr().out
    assert "structures: 8" in info and "forces" in info and "skipped:    4" in info and "Si" in info
    assert main(["data", "info", str(tmp_path / "missing")]) == 2


def test_cli_custom_keys(tmp_path, capsys):
    atoms = labelled(crystal(0))
    atoms.info["my_e"] = 42.0
    ase.io.write(tmp_path / "k.extxyz", atoms)
    assert main(["data", "ingest", str(tmp_path / "k.extxyz"), "--out", str(tmp_path / "s"),
                 "--energy-key", "my_e", "--quiet"]) == 0
    assert StoreReader(tmp_path / "s").read(0)["energy"] == 42.0
    # MACE's spelling of the same option
    assert main(["data", "ingest", str(tmp_path / "k.extxyz"), "--out", str(tmp_path / "mace"),
                 "--energy_key", "my_e", "--quiet"]) == 0
    assert StoreReader(tmp_path / "mace").read(0)["energy"] == 42.0


def test_cli_explicit_key_missing_is_an_error_and_sources_are_shown(tmp_path, capsys):
    atoms = crystal(0)
    atoms.calc = SinglePointCalculator(atoms, energy=-3.0, forces=np.ones((len(atoms), 3)))
    ase.io.write(tmp_path / "f.extxyz", [labelled(crystal(1)), atoms])
    store = tmp_path / "s"
    for option in ("--energy-key", "--forces-key", "--stress-key"):
        key = option.split("-")[2]
        code = main(["data", "ingest", str(tmp_path / "f.extxyz"), "--out", str(store), option, f"DFT_{key}", "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and f"f.extxyz: record 0: no {key} under the key 'DFT_{key}'" in err and not store.exists()
        assert "has 'REF_" in err and f"'REF_{key}'" in err  # the keys the record does have where it looked
    # unset keys fall back to the calculator, and the store says where every label came from
    assert main(["data", "ingest", str(tmp_path / "f.extxyz"), "--out", str(store), "--quiet"]) == 0
    reader = StoreReader(store)
    assert reader.label_sources == {"energy": "info:REF_energy (1), calculator:energy (1)",
                                    "forces": "arrays:REF_forces (1), calculator:forces (1)",
                                    "stress": "info:REF_stress"}
    capsys.readouterr()
    assert main(["data", "info", str(store)]) == 0
    assert "from info:REF_energy (1), calculator:energy (1)" in capsys.readouterr().out


def test_reingested_store_keeps_label_sources(tmp_path):
    ase.io.write(tmp_path / "a.extxyz", [labelled(crystal(i), seed=i) for i in range(2)])
    ingest([tmp_path / "a.extxyz"], tmp_path / "one")
    ingest([tmp_path / "one"], tmp_path / "two")
    assert StoreReader(tmp_path / "two").label_sources == StoreReader(tmp_path / "one").label_sources == {
        "energy": "info:REF_energy", "forces": "arrays:REF_forces", "stress": "info:REF_stress"}


def test_cached_store_explicit_key(tmp_path):
    ase.io.write(tmp_path / "a.extxyz", [labelled(crystal(i), seed=i) for i in range(2)])
    with pytest.raises(InvalidRecordError, match="record 0: no energy under the key 'energy'"):
        cached_store(str(tmp_path / "a.extxyz"), tmp_path / "cache", energy_key="energy")
    (store,) = cached_store(str(tmp_path / "a.extxyz"), tmp_path / "cache", energy_key="REF_energy")
    assert StoreReader(store).label_sources["energy"] == "info:REF_energy"
    with pytest.raises(ValueError, match="energy_key is empty"):
        ingest([tmp_path / "a.extxyz"], tmp_path / "s", energy_key="")


def test_minimum_distance_option(tmp_path, capsys):
    path = tmp_path / "c.extxyz"
    path.write_text(extxyz_frame() + extxyz_frame(positions=((0, 0, 0), (0.05, 0, 0))) + extxyz_frame())
    ingest_cli = ["data", "ingest", str(path), "--quiet", "--out"]
    assert main([*ingest_cli, str(tmp_path / "s")]) == 2
    assert "c.extxyz: record 1: atoms 0 and 1 are 0.0500 Å apart (minimum 0.1 Å) [close_atoms]" in capsys.readouterr().err
    assert main([*ingest_cli, str(tmp_path / "s"), "--skip-bad"]) == 0
    assert "skipped 1 bad record(s): close_atoms 1" in capsys.readouterr().out
    assert StoreReader(tmp_path / "s").metadata["ingest"]["min_distance"] == 0.1
    assert main([*ingest_cli, str(tmp_path / "t"), "--min-distance", "0.01"]) == 0
    assert len(StoreReader(tmp_path / "t")) == 3
    assert main([*ingest_cli, str(tmp_path / "u"), "--min-distance", "0.8"]) == 2
    assert "record 0: atoms 0 and 1 are 0.7000 Å apart (minimum 0.8 Å)" in capsys.readouterr().err
    assert main([*ingest_cli, str(tmp_path / "v"), "--min-distance", "-1"]) == 2
    assert "min_distance must be a number >= 0" in capsys.readouterr().err


def test_cached_store_minimum_distance(tmp_path):
    path = tmp_path / "c.extxyz"
    path.write_text(extxyz_frame() + extxyz_frame(positions=((0, 0, 0), (0.05, 0, 0))))
    with pytest.raises(InvalidRecordError, match="close_atoms"):
        cached_store(str(path), tmp_path / "cache")
    (store,) = cached_store(str(path), tmp_path / "cache", min_distance=0.0)
    assert len(StoreReader(store)) == 2


def test_cached_store_ingests_once(tmp_path):
    ase.io.write(tmp_path / "a.extxyz", [labelled(crystal(i), seed=i) for i in range(3)])
    (first,) = cached_store(str(tmp_path / "a.extxyz"), tmp_path / "cache")
    mtime = os.stat(first).st_mtime_ns
    (second,) = cached_store([str(tmp_path / "a.extxyz")], tmp_path / "cache")
    assert first == second and os.stat(second).st_mtime_ns == mtime and len(StoreReader(first)) == 3
    assert cached_store([first], tmp_path / "cache") == [first]


def test_cached_store_uses_a_concurrent_runs_store(tmp_path, monkeypatch):
    """Two runs sharing a cache ingest the same files at once: the slower one uses the winner's store."""
    import sevenomni.data.ingest as ingest_module

    source = tmp_path / "a.extxyz"
    ase.io.write(source, [labelled(crystal(i), seed=i) for i in range(3)])
    real_ingest = ingest_module.ingest

    def racing_ingest(sources, out, *args, **kwargs):
        real_ingest(sources, out)  # the other run finishes first ...
        return real_ingest(sources, out, *args, **kwargs)  # ... so this one finds `out` taken

    monkeypatch.setattr(ingest_module, "ingest", racing_ingest)
    (store,) = cached_store(str(source), tmp_path / "cache", name="crystals")
    assert Path(store).name.startswith("crystals-") and len(StoreReader(store)) == 3
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [Path(store).name]  # no partial left


def test_cached_store_uses_a_store_finished_while_it_was_committing(tmp_path, monkeypatch):
    """The other run's store appears between the writer's check and its rename: still no error."""
    import sevenomni.data.store.writer as store_module

    source = tmp_path / "a.extxyz"
    ase.io.write(source, [labelled(crystal(i), seed=i) for i in range(3)])
    real_rename, raced = os.rename, []

    def rename_after_a_rival(old, new):
        if ".partial-" in str(old) and not raced:
            raced.append(new)
            ingest([source], new)  # the rival run commits first, in the window
        return real_rename(old, new)

    monkeypatch.setattr(store_module.os, "rename", rename_after_a_rival)
    (store,) = cached_store(str(source), tmp_path / "cache", name="crystals")
    assert raced and Path(store) == Path(raced[0]) and len(StoreReader(store)) == 3
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [Path(store).name]  # no partial left


def test_killed_ingest_leaves_no_complete_store(tmp_path):
    import multiprocessing
    import signal
    import time

    from sevenomni.data.store import StoreError

    path = tmp_path / "big.extxyz"
    path.write_text(extxyz_frame() * 50_000)
    process = multiprocessing.get_context("fork").Process(target=ingest, args=([path], tmp_path / "store"))
    process.start()
    deadline = time.time() + 60
    while time.time() < deadline and process.is_alive():
        if any(p.name.startswith("store.partial-") for p in tmp_path.iterdir()):
            time.sleep(0.3)  # mid-ingest
            break
        time.sleep(0.01)
    assert process.is_alive(), "ingest finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    assert not (tmp_path / "store").exists()
    (partial,) = [p for p in tmp_path.iterdir() if p.name.startswith("store.partial-")]
    with pytest.raises(StoreError, match="incomplete"):
        StoreReader(partial)
