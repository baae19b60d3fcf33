"""SI-2 on simplified irreps: the same map on the same flat weights, so older files load unchanged.

``tests/data/legacy_v1`` was written by sevenomni at commit ed87acd, when SI-2 read the tensor
product's unsimplified output irreps: a float64 model file and a training checkpoint (EMA shadow =
1.1 × weights), with the energies, forces and stress that version computed (``reference.json``).
"""

import json

import numpy as np
import pytest
import torch
from conftest import TESTS, make_model, structures
from e3nn import o3

from sevenomni import load_model, predict

LEGACY = TESTS / "data" / "legacy_v1"


def reference(key):
    return json.loads((LEGACY / "reference.json").read_text())[key]


def assert_matches(model, task, expected):
    (result,) = predict(model, [structures()["triclinic"]], task)
    assert result["energy"] == pytest.approx(expected["energy"], rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(result["forces"], expected["forces"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(result["stress"], expected["stress"], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "hyperparameters",
    [dict(lmax=3), dict(lmax=2, parity="so3"), dict(lmax=2, num_layers=4, hidden_irreps="8x0e+3x0o+4x1o+2x1e")],
)
def test_si2_is_the_unsimplified_linear_with_the_same_flat_weights(hyperparameters):
    model = make_model(**hyperparameters)
    paths = {"simplified": 0, "unsimplified": 0}
    for layer in model.layers:
        unsimplified = o3.Linear(layer.conv.irreps_out, layer.si2.irreps_out).double()
        paths["simplified"] += len(layer.si2.linear.instructions)
        paths["unsimplified"] += len(unsimplified.instructions)
        with torch.no_grad():
            unsimplified.weight.copy_(layer.si2.linear.weight)
        x = torch.randn(5, layer.conv.irreps_out.dim, dtype=torch.float64)
        torch.testing.assert_close(layer.si2.linear(x), unsimplified(x), rtol=1e-13, atol=1e-13)
    assert paths["simplified"] < paths["unsimplified"]


def test_legacy_model_file_gives_the_same_outputs():
    model = load_model(LEGACY / "model.pt")
    for task in ("crystal", "molecule"):
        assert_matches(model, task, reference(task))


def test_legacy_training_checkpoint_loads_its_ema_weights():
    assert_matches(load_model(LEGACY / "training.pt"), "crystal", reference("ema_crystal"))
