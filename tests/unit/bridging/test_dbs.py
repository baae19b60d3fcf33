"""`sevenomni dbs select` (random, fps, disagreement) and `sevenomni dbs label` (resumable, parallel)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from analysis_helpers import tiny_model
from ase import Atoms
from ase.calculators.emt import EMT
from training_helpers import TINY

from sevenomni import predict, save_checkpoint
from sevenomni.bridging.label import label
from sevenomni.bridging.select import SelectionError, farthest_points, read_selection, select, write_selection
from sevenomni.cli import main
from sevenomni.data.ingest import ingest
from sevenomni.data.store import StoreReader


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("dbs") / "molecules"
    ingest([TINY / "molecule_gfn2.extxyz"], path)
    return path


def structures_of(store, indices):
    with StoreReader(store) as reader:
        items = [reader.read(i) for i in indices]
    return [Atoms(numbers=i["numbers"], positions=i["positions"], cell=i["cell"], pbc=i["pbc"]) for i in items]


def test_random_selection_is_seeded_and_sized(store):
    size = len(StoreReader(store))
    first, again = select(store, 0.2, "random", seed=3), select(store, 0.2, "random", seed=3)
    assert first["indices"] == again["indices"] != select(store, 0.2, "random", seed=4)["indices"]
    assert len(first["indices"]) == round(0.2 * size) == len(set(first["indices"]))
    assert len(select(store, count=7)["indices"]) == 7
    with pytest.raises(SelectionError, match="fraction"):
        select(store, 1.5)
    with pytest.raises(SelectionError, match="exactly one"):
        select(store, 0.1, count=3)
    with pytest.raises(SelectionError, match="needs a model"):
        select(store, 0.1, "fps")


def test_farthest_points_spread_out():
    points = np.array([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [5.0, 5.0], [0.0, 0.1]])
    chosen = farthest_points(points, 3, seed=0)
    assert len(set(chosen.tolist())) == 3
    assert {2, 3} <= set(chosen.tolist())  # the two outliers come before any second point of the cluster


def test_fps_and_disagreement_with_a_model(store, tmp_path):
    model = tiny_model()
    fps = select(store, 0.1, "fps", model)
    assert len(set(fps["indices"])) == len(fps["indices"]) == round(0.1 * fps["size"])
    chosen = select(store, 0.1, "disagreement", model)
    assert chosen["channels"] == ["gfn1", "gfn2"] and chosen["scores"] == sorted(chosen["scores"], reverse=True)
    # The score is the RMS force difference of the two channels, as the calculator computes it.
    atoms = structures_of(store, chosen["indices"][:1])
    (a,), (b,) = (list(predict(model, atoms, task, device="cpu")) for task in ("gfn1", "gfn2"))
    rms = np.sqrt(np.mean((a["forces"] - b["forces"]) ** 2))
    assert chosen["scores"][0] == pytest.approx(rms, rel=1e-6)
    everything = select(store, 1.0, "disagreement", model)
    assert chosen["scores"][-1] >= np.median(everything["scores"])
    with pytest.raises(SelectionError, match="two channels"):
        select(store, 0.1, "disagreement", tiny_model(tasks=("gfn1",)))


def test_label_matches_the_calculator_skips_failures_and_is_parallel(store, tmp_path):
    selection = tmp_path / "selection.json"
    write_selection(select(store, 0.3, "random", seed=1), selection)
    one = label(selection, "dbs_helpers:PickyEMT", tmp_path / "one")
    two = label(selection, "dbs_helpers:PickyEMT", tmp_path / "two", workers=2)
    indices = read_selection(selection)["indices"]
    odd = sum(len(atoms) % 2 for atoms in structures_of(store, indices))
    assert one.labelled == len(indices) - odd > 0 and one.skipped == {"RuntimeError": odd} and odd > 0
    assert (one.labelled, one.skipped) == (two.labelled, two.skipped)
    with StoreReader(tmp_path / "one") as a, StoreReader(tmp_path / "two") as b:
        assert len(a) == len(b) == one.labelled
        for i in range(len(a)):
            x, y = a.read(i), b.read(i)
            assert np.array_equal(x["forces"], y["forces"]) and x["energy"] == y["energy"]
        first = a.read(0)
    atoms = Atoms(numbers=first["numbers"], positions=first["positions"])
    atoms.calc = EMT()
    assert first["energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
    np.testing.assert_allclose(first["forces"], atoms.get_forces(), atol=1e-10)
    assert not (tmp_path / "one.partial").exists()


def test_a_killed_labelling_resumes_where_it_stopped(store, tmp_path):
    selection = tmp_path / "selection.json"
    write_selection(select(store, 0.4, "random", seed=2), selection)
    kwargs = {"kill_at": 20, "marker": str(tmp_path / "killed")}
    with pytest.raises(SystemExit):
        label(selection, "dbs_helpers:KilledOnceEMT", tmp_path / "out", kwargs)
    assert (tmp_path / "out.partial").is_dir() and not (tmp_path / "out").exists()
    resumed = label(selection, "dbs_helpers:KilledOnceEMT", tmp_path / "out", kwargs)
    assert resumed.resumed_chunks >= 1
    reference = label(selection, "ase.calculators.emt:EMT", tmp_path / "reference")
    assert (resumed.labelled, resumed.skipped) == (reference.labelled, reference.skipped)
    with StoreReader(tmp_path / "out") as a, StoreReader(tmp_path / "reference") as b:
        assert [a.read(i)["energy"] for i in range(len(a))] == [b.read(i)["energy"] for i in range(len(b))]


def test_command_line(store, tmp_path, capsys):
    model = tiny_model()
    save_checkpoint(model, tmp_path / "model.pt")
    selection = tmp_path / "selection.json"
    assert main(["dbs", "select", str(store), "--fraction", "0.1", "--strategy", "disagreement",
                 "--model", str(tmp_path / "model.pt"), "--out", str(selection)]) == 0
    assert "selected" in capsys.readouterr().out and json.loads(selection.read_text())["strategy"] == "disagreement"
    assert main(["dbs", "label", str(selection), "--calculator", "ase.calculators.emt:EMT",
                 "--kwargs", "{}", "--out", str(tmp_path / "labelled")]) == 0
    assert "labelled" in capsys.readouterr().out
    assert main(["dbs", "label", str(selection), "--calculator", "nowhere:Calc", "--out", str(tmp_path / "x")]) == 2
    assert "cannot import nowhere" in capsys.readouterr().err
