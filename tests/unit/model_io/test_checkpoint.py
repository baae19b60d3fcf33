"""Checkpoints round-trip bit for bit; bad files fail with a clear message."""

import pickle

import pytest
import torch
from conftest import make_model

from sevenomni import CheckpointError, load_model, save_checkpoint
from sevenomni.cli import main


@pytest.fixture(scope="module")
def model():
    return make_model(dtype="float32", parity="so3", self_connection="linear", envelope="xplor", xplor_on=3.5)


def test_round_trip_is_bit_exact(model, tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(model, path, trained_on="unit test")
    loaded = load_model(path)
    assert loaded.config == model.config
    assert loaded.tasks == model.tasks and loaded.elements == model.elements
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for key in original:
        assert original[key].dtype == restored[key].dtype
        assert torch.equal(original[key], restored[key]), key
    raw = torch.load(path, weights_only=True)
    assert raw["metadata"] == {"trained_on": "unit test"} and raw["cutoff"] == model.cutoff


def test_round_trip_after_append_task(model, tmp_path):
    import copy

    grown = copy.deepcopy(model)
    grown.append_task("new")
    save_checkpoint(grown, tmp_path / "grown.pt")
    assert load_model(tmp_path / "grown.pt").tasks == ["crystal", "molecule", "new"]


def test_truncated_checkpoint(model, tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(model, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="damaged or truncated"):
        load_model(path)


def test_garbage_and_foreign_files(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="not a complete torch zip archive"):
        load_model(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model_state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a sevenomni model"):
        load_model(foreign)
    malicious = tmp_path / "pickle.pt"
    malicious.write_bytes(pickle.dumps(object()))
    with pytest.raises(CheckpointError):
        load_model(malicious)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path / "missing.pt")


def test_wrong_version_and_inconsistent_weights(model, tmp_path):
    from sevenomni.model_io.checkpoint import model_record

    record = model_record(model)
    torch.save({**record, "version": 99}, tmp_path / "v99.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        load_model(tmp_path / "v99.pt")
    record["state_dict"].pop(next(iter(record["state_dict"])))
    torch.save(record, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="inconsistent"):
        load_model(tmp_path / "broken.pt")


def test_info_command(model, tmp_path, capsys):
    path = tmp_path / "model.pt"
    save_checkpoint(model, path)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    shared = sum(p.numel() for _, p in model.shared_parameters())
    assert "crystal, molecule" in out and "H C N O Si" in out and f"{shared:,}" in out
    assert main(["info", str(tmp_path / "missing.pt")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
