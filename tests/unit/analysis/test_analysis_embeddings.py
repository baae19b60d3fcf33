"""`sevenomni analyze embeddings`: θT matrices per site, norms, cosines, PCA with the origin."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pytest
import torch
from conftest import make_model

from sevenomni import save_checkpoint
from sevenomni.analysis.embeddings import analyse_embeddings, pca_with_origin
from sevenomni.cli import main


def planar_model():
    """Three tasks whose θT rows lie in a plane through the origin: a = u, b = 2u, c = v."""
    model = make_model(tasks=("pbe", "wb97x", "r2scan"))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, table in model.task_embedding_parameters():
            u, v = torch.randn(2, table.shape[1], generator=generator, dtype=table.dtype)
            table.copy_(torch.stack([u, 2 * u, v]))
    return model


def test_norms_cosines_and_a_distance_preserving_pca():
    model = planar_model()
    analysis = analyse_embeddings(model)
    tables = dict(model.task_embedding_parameters())
    assert list(analysis["sites"]) == [name.removesuffix(".embedding.weight") for name in tables] + ["all"]
    for name, table in tables.items():
        entry = analysis["sites"][name.removesuffix(".embedding.weight")]
        np.testing.assert_allclose(entry["norms"], table.detach().norm(dim=1).numpy())
        assert entry["cosine"][0, 1] == pytest.approx(1.0)
        assert entry["cosine"][0, 0] == pytest.approx(1.0)
        # Rank 2 through the origin: the 2-D map keeps every distance, to the origin too.
        pca = entry["pca"]
        rows = np.vstack([entry["matrix"], np.zeros(entry["matrix"].shape[1])])
        points = np.vstack([pca["tasks"], pca["origin"]])
        for i, j in combinations(range(4), 2):
            assert np.linalg.norm(points[i] - points[j]) == pytest.approx(np.linalg.norm(rows[i] - rows[j]))
        assert pca["explained"].sum() == pytest.approx(1.0)
    everything = analysis["sites"]["all"]["matrix"]
    assert everything.shape == (3, sum(t.shape[1] for t in tables.values()))


def test_pca_of_one_task_and_signs():
    pca = pca_with_origin(np.array([[3.0, 4.0]]))
    assert pca["tasks"][0, 0] > 0 and abs(pca["tasks"][0, 1]) < 1e-12
    assert np.linalg.norm(pca["tasks"][0] - pca["origin"]) == pytest.approx(5.0)
    np.testing.assert_allclose(pca["explained"], [1.0, 0.0], atol=1e-12)


def test_command_writes_json_and_png(tmp_path, capsys):
    save_checkpoint(planar_model(), tmp_path / "model.pt")
    assert main(["analyze", "embeddings", str(tmp_path / "model.pt"), "--out", str(tmp_path / "emb")]) == 0
    printed = capsys.readouterr().out
    assert "layers.0.si1" in printed and "cos pbe·wb97x" in printed
    data = json.loads((tmp_path / "emb" / "embeddings.json").read_text())
    assert data["tasks"] == ["pbe", "wb97x", "r2scan"]
    assert data["sites"]["layers.0.si1"]["cosine"][0][1] == pytest.approx(1.0)
    assert len(data["sites"]["all"]["pca"]["tasks"]) == 3
    assert (tmp_path / "emb" / "embeddings.png").stat().st_size > 20_000


def test_a_model_without_task_embeddings_is_a_clear_error(tmp_path, capsys):
    save_checkpoint(make_model(task_embedding_sites=[]), tmp_path / "plain.pt")
    assert main(["analyze", "embeddings", str(tmp_path / "plain.pt"), "--out", str(tmp_path / "x")]) == 2
    assert "has no task embeddings" in capsys.readouterr().err


# ----------------------------------------------------------------------------- channel gap
def test_channel_gap_parts_account_for_the_whole_gap(tmp_path):
    from ase.build import molecule
    from ase.io import write

    from sevenomni.analysis.channel_gap import channel_gap, task_parts

    model = make_model(scale_per_task=True, task_embedding_sites=["si1", "si2", "readout"])
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in task_parts(model).values():
            parameter.add_(0.3 * torch.randn_like(parameter))
        site = model.layers[0].si1.embedding.weight
        site[1] = site[0]  # one site identical in both tasks: it carries none of the gap
    structures = [molecule("CH3OH"), molecule("H2O")]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    result = channel_gap(model, structures, "crystal", "molecule")
    assert result["gap"] > 1e-3
    parts = result["parts"]
    assert set(parts) == {*task_parts(model), "all"} and "energy_scale" in parts
    assert parts["all"]["gap_after_swap"] < 1e-10 * max(1.0, result["gap"])  # swapping everything: channel b
    assert abs(parts["layers.0.si1"]["closed"]) < 1e-12 and parts["layers.0.si1"]["moved"] < 1e-12
    assert max(p["closed"] for name, p in parts.items() if name != "all") > 0
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())  # rows restored

    model_path = tmp_path / "model.pt"
    save_checkpoint(model, model_path)
    write(tmp_path / "mols.extxyz", structures)
    main(["analyze", "gap", str(model_path), str(tmp_path / "mols.extxyz"), "--tasks", "crystal", "molecule",
          "--out", str(tmp_path / "gap")])
    written = json.loads((tmp_path / "gap" / "gap.json").read_text())
    assert written["gap"] == pytest.approx(result["gap"], rel=1e-9)
