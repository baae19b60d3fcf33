"""The physics mixin (sevenomni/testing/physics.py) on every model configuration and backend we ship.

E is invariant and F, σ equivariant under rotation, inversion, translation, permutation and the
choice of periodic image; F and σ are energy derivatives; the common channel is θT = 0.
"""

import numpy as np
import pytest
from conftest import make_model, structures
from scipy.spatial.transform import Rotation

from sevenomni.testing.physics import ModelPhysics, evaluate, transformed


class TestFloat64(ModelPhysics):
    @pytest.fixture(scope="class")
    def model(self):
        return make_model(task_embedding_sites=["si1", "si2", "readout"])


class TestFloat32(ModelPhysics):
    finite_difference_step = 1e-2
    finite_difference_tolerance = 2e-2

    @pytest.fixture(scope="class")
    def model(self):
        return make_model(dtype="float32")


class TestXplorEnvelopeAndLinearSelfConnection(ModelPhysics):
    @pytest.fixture(scope="class")
    def model(self):
        return make_model(envelope="xplor", xplor_on=3.0, self_connection="linear", lmax=3)


class TestSO3PerTaskElementScales(ModelPhysics):
    @pytest.fixture(scope="class")
    def model(self):
        return make_model(parity="so3", num_layers=3, scale_per_element=True, hidden_irreps="8x0e+4x1e+4x1o+2x2e")


class TestCuequivarianceBackend(ModelPhysics):
    @pytest.fixture(scope="class")
    def model(self):
        pytest.importorskip("cuequivariance_torch")
        return make_model().set_tp_backend("cueq")


def test_so3_model_is_rotation_invariant_but_sees_chirality():
    # Three layers: the second builds cross products (1e x 1e -> 1e), the last a triple product.
    model = make_model(parity="so3", num_layers=3)
    atoms = structures()["molecule"]
    rotation = Rotation.random(random_state=5).as_matrix()
    reference = evaluate(model, atoms)
    assert abs(evaluate(model, transformed(atoms, rotation))["energy"] - reference["energy"]) < 1e-8
    mirrored = evaluate(model, transformed(atoms, np.diag([1.0, 1.0, -1.0])))
    assert abs(mirrored["energy"] - reference["energy"]) > 1e-6


class TestScaleInvariantTaskEmbeddings(ModelPhysics):
    @pytest.fixture(scope="class")
    def model(self):
        return make_model(task_embedding_sites=["si1", "si2", "readout"], task_embedding_norm=True)


def test_scale_invariant_task_embeddings_give_unit_rms_scalars_on_every_channel():
    import torch

    from sevenomni.nn.task import TaskLinear

    torch.manual_seed(0)
    layer = TaskLinear("4x0e+2x1o", "6x0e+2x1o", num_tasks=2, normalize=True).double()
    with torch.no_grad():
        layer.embedding.weight.normal_(0.0, 3.0)
    x = torch.randn(5, 10, dtype=torch.float64)
    for task in (torch.zeros(5, dtype=torch.long), torch.ones(5, dtype=torch.long), None):
        scalars = layer(x, task)[:, layer.scalar_index]
        assert torch.allclose(scalars.pow(2).mean(dim=1), torch.ones(5, dtype=torch.float64), atol=1e-5)
    with torch.no_grad():
        layer.linear.weight.mul_(100.0)  # the shared weights grow: θT's share shrinks, it is not amplified
    plain = TaskLinear("4x0e+2x1o", "6x0e+2x1o", num_tasks=2).double()
    plain.load_state_dict(layer.state_dict())
    gap = lambda module: (module(x, torch.ones(5, dtype=torch.long)) - module(x, None))[:, layer.scalar_index].abs().max()
    assert gap(layer) < 0.1 * gap(plain)
