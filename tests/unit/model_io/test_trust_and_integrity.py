"""Model files cannot run code, damaged files are refused, and every model source loads everywhere.

The malicious files carry a ``__reduce__`` payload that would create a marker file when unpickled;
every entry point must refuse them, naming the offending global and the opt-in, and leave no file.
"""

from __future__ import annotations

import os
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from conftest import REPO, make_model
from training_helpers import make_run, write_config

from sevenomni import CheckpointError, SevenOmniCalculator, load_model, predict, save_checkpoint
from sevenomni.cli import main
from sevenomni.model_io.checkpoint import TRAINING_STATE_FORMAT, atomic_save, read_training_state


class Payload:
    """Unpickling this runs ``open(marker, 'w')``: a file appears if the loader executed it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def sevenn_looking_payload(path: Path, marker: Path) -> Path:
    """A pickle whose strings make it look like a SevenNet checkpoint (and so route it there)."""
    config = {"num_convolution_layer": 3, "_type_map": {1: 0}, "version": "0.11.0", "evil": Payload(marker)}
    torch.save({"config": config, "model_state_dict": {"w": torch.zeros(2)}}, path)
    return path


def plain_payload(path: Path, marker: Path) -> Path:
    torch.save({"format": "sevenomni-model", "version": 1, "evil": Payload(marker)}, path)
    return path


def training_state_payload(path: Path, marker: Path) -> Path:
    torch.save({"format": TRAINING_STATE_FORMAT, "config": {}, "evil": Payload(marker)}, path)
    return path


PAYLOADS = {"sevenn-looking": sevenn_looking_payload, "plain": plain_payload}


@pytest.fixture(params=list(PAYLOADS))
def malicious(request, tmp_path):
    marker = tmp_path / "PWNED"
    path = PAYLOADS[request.param](tmp_path / "evil.pth", marker)
    yield path
    assert not marker.exists(), "the payload ran"


REFUSAL = r"refused to load.*(io|builtins)\.open.*(trust_pickle|--trust-pickle)"


def test_load_model_refuses_a_pickle_that_would_run_code(malicious):
    with pytest.raises(CheckpointError, match=REFUSAL):
        load_model(malicious)


def test_calculator_refuses_a_pickle_that_would_run_code(malicious):
    with pytest.raises(CheckpointError, match=REFUSAL):
        SevenOmniCalculator(malicious)


TINY_TEST_SET = REPO / "recipes" / "data" / "tiny" / "test_crystal_gfn1.extxyz"


@pytest.mark.parametrize("command", [["info"], ["import-sevenn"], ["eval"], ["analyze", "embeddings"]])
def test_cli_refuses_a_pickle_that_would_run_code(malicious, command, tmp_path, capsys):
    out = tmp_path / "converted.pt"
    extra = {"import-sevenn": ["--out", str(out)], "eval": [str(TINY_TEST_SET), "--out", str(tmp_path / "eval")]}
    argv = [*command, str(malicious), *extra.get(command[0], [])]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "refused to load" in err or ("not a SevenNet checkpoint" in err and command == ["import-sevenn"]), err
    assert not out.exists()


def test_init_from_refuses_a_pickle_that_would_run_code(malicious, tmp_path, capsys):
    raw = make_run(tmp_path, count=4)
    raw["model"] = {"init_from": str(malicious)}
    assert main(["train", str(write_config(raw, tmp_path / "run.yaml"))]) == 2
    assert "refused to load" in capsys.readouterr().err


def test_resume_refuses_a_training_state_that_would_run_code(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    training_state_payload(tmp_path / "run" / "checkpoints" / "last.pt", marker)
    assert main(["train", "--resume", str(tmp_path / "run")]) == 2
    assert "refused to load" in capsys.readouterr().err
    assert not marker.exists()


def test_trust_pickle_is_the_only_way_to_unpickle_fully(tmp_path):
    """A SevenNet file with a harmless non-allowlisted object loads only with trust_pickle=True."""
    pytest.importorskip("sevenn")
    import pathlib

    from sevenomni.model_io.sevenn.files import read_sevenn_checkpoint, resolve_sevenn_checkpoint

    raw = read_sevenn_checkpoint(resolve_sevenn_checkpoint("7net-mf-0"))
    path = tmp_path / "odd.pth"
    torch.save({**raw, "config": {**raw["config"], "odd_path": pathlib.PurePosixPath("/data")}}, path)
    with pytest.raises(CheckpointError, match=r"pathlib\.PurePosixPath.*trust"):
        load_model(path)
    assert main(["info", str(path)]) == 2
    model = load_model(path, trust_pickle=True)
    assert model.tasks == load_model("7net-mf-0").tasks
    assert main(["info", str(path), "--trust-pickle"]) == 0


# --------------------------------------------------------------------------------------------
# Integrity
# --------------------------------------------------------------------------------------------
def flip_bytes_in_largest_tensor(path: Path, count: int = 8) -> str:
    """XOR ``count`` bytes in the middle of the largest tensor member; returns its name."""
    with zipfile.ZipFile(path) as archive:
        member = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", data[member.header_offset + 26 : member.header_offset + 30])
    start = member.header_offset + 30 + name_length + extra_length + member.file_size // 2
    for offset in range(count):
        data[start + offset] ^= 0xFF
    path.write_bytes(bytes(data))
    return member.filename


def test_flipped_bytes_in_a_model_file_are_refused(tmp_path, capsys):
    path = tmp_path / "model.pt"
    save_checkpoint(make_model(), path)
    member = flip_bytes_in_largest_tensor(path)
    with pytest.raises(CheckpointError, match=rf"model\.pt: damaged.*CRC.*{member}"):
        load_model(path)
    assert main(["info", str(path)]) == 2
    assert "damaged" in capsys.readouterr().err


def test_flipped_bytes_in_a_sevenn_checkpoint_are_refused(tmp_path):
    pytest.importorskip("sevenn")
    from sevenomni.model_io.sevenn.files import resolve_sevenn_checkpoint

    path = tmp_path / "copy.pth"
    path.write_bytes(resolve_sevenn_checkpoint("7net-0").read_bytes())
    flip_bytes_in_largest_tensor(path)
    with pytest.raises(CheckpointError, match="damaged"):
        load_model(path)


def test_truncated_and_empty_files_are_refused(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(make_model(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="damaged or truncated"):
        load_model(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="damaged or truncated"):
        load_model(path)


def test_flipped_bytes_in_a_training_state_are_refused(tmp_path):
    path = tmp_path / "last.pt"
    model = make_model()
    atomic_save({"format": TRAINING_STATE_FORMAT, "model": model.state_dict()}, path)
    flip_bytes_in_largest_tensor(path)
    with pytest.raises(CheckpointError, match="damaged"):
        read_training_state(path)


# --------------------------------------------------------------------------------------------
# Every model source, everywhere a model path is taken
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A real 6-step run with EMA: model.pt, checkpoints/best.pt, last.pt."""
    tmp_path = tmp_path_factory.mktemp("run")
    raw = make_run(tmp_path, count=8, overrides={"train.ema_decay": 0.5})
    assert main(["train", str(write_config(raw, tmp_path / "run.yaml"))]) == 0
    return tmp_path / "run"


def test_training_checkpoints_and_run_directories_load_with_ema_weights(finished_run):
    exported = load_model(finished_run / "model.pt")
    from_dir = load_model(finished_run)
    from_last = load_model(finished_run / "checkpoints" / "last.pt")
    for model in (from_dir, from_last):
        for (name, a), b in zip(exported.state_dict().items(), model.state_dict().values()):
            assert torch.equal(a, b), name
    raw = torch.load(finished_run / "checkpoints" / "last.pt", weights_only=True)
    assert raw["ema"] is not None
    live = dict(zip((n for n, _ in exported.named_parameters()), raw["model"].values()))
    assert any(not torch.equal(p, live[n]) for n, p in exported.named_parameters() if n in live), (
        "the EMA weights, not the live ones, must be loaded"
    )
    load_model(finished_run / "checkpoints" / "best.pt")


def test_every_entry_point_takes_a_run_directory_or_a_checkpoint(finished_run, capsys):
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.rattle(0.05, seed=1)
    reference = SevenOmniCalculator(finished_run / "model.pt", task="gfn1", device="cpu")
    expected = reference.get_potential_energy(atoms.copy())
    for source in (finished_run, finished_run / "checkpoints" / "last.pt"):
        calc = SevenOmniCalculator(source, task="gfn1", device="cpu")
        assert calc.get_potential_energy(atoms.copy()) == pytest.approx(expected, abs=1e-12)
        (result,) = predict(source, [atoms], task="gfn1", device="cpu")
        assert result["energy"] == pytest.approx(expected, abs=1e-12)
        assert main(["info", str(source)]) == 0
        assert "gfn1, gfn2" in capsys.readouterr().out


def test_a_directory_without_model_pt_names_its_checkpoints(finished_run, tmp_path):
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints").mkdir(parents=True)
    (unfinished / "checkpoints" / "last.pt").write_bytes((finished_run / "checkpoints" / "last.pt").read_bytes())
    with pytest.raises(CheckpointError, match=r"without model\.pt.*last\.pt"):
        load_model(unfinished)


# --------------------------------------------------------------------------------------------
# Permissions
# --------------------------------------------------------------------------------------------
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_model_files_respect_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        save_checkpoint(make_model(), tmp_path / "model.pt")
        atomic_save({"x": torch.zeros(1)}, tmp_path / "state.pt")
    finally:
        os.umask(previous)
    assert (tmp_path / "model.pt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "state.pt").stat().st_mode & 0o777 == 0o644


def test_shipped_sevenn_checkpoints_still_load_safely():
    """The shipped files need only the plain-data allowlist (their exact match is tested elsewhere)."""
    pytest.importorskip("sevenn")
    for name in ("7net-0", "7net-0_22May2024", "7net-l3i5", "7net-mf-0"):
        model = load_model(name)
        atoms = molecule("H2O")
        (result,) = predict(model, [atoms], task=None if len(model.tasks) == 1 else "PBE", device="cpu")
        assert np.isfinite(result["energy"])


def test_resume_from_a_damaged_last_checkpoint_names_the_newest_intact_one(finished_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    stage = next((run / "checkpoints").glob("stage-*.pt"))
    flip_bytes_in_largest_tensor(run / "checkpoints" / "last.pt")
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "last.pt: damaged" in err and "newest intact checkpoint" in err and stage.name in err, err
