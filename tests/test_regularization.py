"""Selective task regularization: the penalty's gradient reaches θT only, as λ·θT."""

import pytest
import torch

from conftest import make_model
from sevenomni.train.regularization import WeightPenalty, task_embedding_norm


@pytest.fixture
def model():
    return make_model(task_embedding_sites=["si1", "si2", "readout"])


def penalty_gradients(model, mode, strength):
    model.zero_grad(set_to_none=True)
    WeightPenalty(model, mode, strength)().backward()
    return {name: p.grad for name, p in model.named_parameters()}


def test_task_penalty_gradient_is_lambda_theta_t_and_zero_elsewhere(model):
    strength = 0.37
    grads = penalty_gradients(model, "task", strength)
    embeddings = dict(model.task_embedding_parameters())
    assert embeddings
    for name, parameter in model.named_parameters():
        if name in embeddings:
            assert torch.equal(grads[name], strength * parameter.detach())
        else:
            assert grads[name] is None or torch.count_nonzero(grads[name]) == 0, name


def test_task_penalty_value(model):
    strength = 0.5
    expected = 0.5 * strength * task_embedding_norm(model) ** 2
    assert float(WeightPenalty(model, "task", strength)()) == pytest.approx(expected, rel=1e-12)


def test_all_penalty_reaches_every_trainable_weight_but_not_energy_references(model):
    with torch.no_grad():  # non-trivial shifts and scales, as after fitting statistics
        for _, parameter in model.energy_reference_parameters():
            parameter.add_(torch.randn_like(parameter))
    grads = penalty_gradients(model, "all", 0.1)
    references = {name for name, _ in model.energy_reference_parameters()}
    assert any("shift" in name for name in references) and any("scale" in name for name in references)
    for name, parameter in model.named_parameters():
        if parameter.requires_grad and name not in references:
            assert torch.allclose(grads[name], 0.1 * parameter.detach()), name
        else:
            assert grads[name] is None, name


def test_none_penalty_is_zero(model):
    assert float(WeightPenalty(model, "none", 1.0)()) == 0.0
    with pytest.raises(ValueError, match="task, all or none"):
        WeightPenalty(model, "shared", 1.0)
