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


# ---------------------------------------------------------------------------- function-space penalty
def function_space_penalty(model, structures, task):
    """Total of the function-space terms on a batch of ``structures`` (all of ``task``), and its gradients."""
    from sevenomni.data.graph import atoms_to_graph, collate
    from sevenomni.train.regularization import FunctionSpacePenalty

    graphs = []
    for atoms in structures:
        graph = atoms_to_graph(atoms, model.cutoff)
        graph.task = torch.tensor([model.task_index(task)])
        graphs.append(graph)
    batch = collate(graphs)
    model.zero_grad(set_to_none=True)
    prediction = model(batch, compute_forces=True, compute_stress=False, create_graph=True)
    terms = FunctionSpacePenalty(0.5)(model, batch, prediction)
    total = sum(term.total / term.count for term in terms.values())
    total.backward()
    return float(total), {name: p.grad for name, p in model.named_parameters()}


def test_function_space_penalty_is_zero_without_task_embeddings():
    from conftest import structures

    model = make_model(task_embedding_sites=["si1", "si2", "readout"])
    with torch.no_grad():
        for _, parameter in model.task_embedding_parameters():
            parameter.zero_()
    total, grads = function_space_penalty(model, list(structures().values()), "crystal")
    assert total == 0.0
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads.values())


def test_function_space_penalty_reaches_theta_t_of_the_batch_task_and_theta_c_not_the_shifts():
    from conftest import structures

    model = make_model(task_embedding_sites=["si1", "si2", "readout"])
    total, grads = function_space_penalty(model, list(structures().values()), "crystal")
    assert total > 0
    crystal, molecule = model.task_index("crystal"), model.task_index("molecule")
    for name, parameter in model.task_embedding_parameters():
        assert torch.count_nonzero(grads[name][crystal]) > 0, name
        assert torch.count_nonzero(grads[name][molecule]) == 0, name  # no molecule structure in the batch
    assert grads["energy_shift.weight"] is None or torch.count_nonzero(grads["energy_shift.weight"]) == 0
    shared = [name for name, _ in model.shared_parameters() if grads[name] is not None]
    assert any(torch.count_nonzero(grads[name]) > 0 for name in shared)


def test_function_space_penalty_trains_and_logs(tmp_path):
    from training_helpers import make_run

    from sevenomni.train.config import load_config
    from sevenomni.train.trainer import Trainer

    raw = make_run(tmp_path, count=8, overrides={"train.regularization.function_space": 0.5, "stages.0.steps": 2})
    trainer = Trainer(load_config(raw=raw))
    trainer.run()
    header = (tmp_path / "run" / "train.csv").read_text().splitlines()[0]
    assert "loss_function_space_energy" in header and "loss_function_space_forces" in header


def test_default_strength_is_the_ablation_choice_of_each_mode():
    from sevenomni.train.config import RegularizationSection

    assert RegularizationSection().strength == 1.0
    assert RegularizationSection(mode="all").strength == 1e-6
    assert RegularizationSection(mode="none").strength == 0.0
    assert RegularizationSection(mode="all", strength=0.5).strength == 0.5
    assert RegularizationSection(mode="all", strength=None).strength == 1e-6  # null: the mode's default
    with pytest.raises(ValueError, match="strength"):
        RegularizationSection(strength=-1.0)
