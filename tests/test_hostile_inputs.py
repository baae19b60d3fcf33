"""Issue 26, hostile inputs round two: each crafted file, cell or setting ends in a named one-line error.

One section per numbered case of the issue; the random version of these probes is
``test_fuzz_hostile_inputs.py``.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import write
from conftest import make_model

from sevenomni import CheckpointError, SevenOmniCalculator, load_model, save_checkpoint
from sevenomni.calculator import PredictionError
from sevenomni.data.dataset import LMDBDataset
from sevenomni.data.graph import StructureError
from sevenomni.data.ingest import ingest
from sevenomni.data.readers import InvalidRecordError
from sevenomni.data.store import Record, write_store


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
    import sevenomni.checkpoint as checkpoint

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
