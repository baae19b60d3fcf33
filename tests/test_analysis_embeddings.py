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
