"""Every task-specific parameter is under the selective penalty or exempt for a stated reason, and
the energy-scale treatments (``model.scale_per_task``) do what they say."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase.build import molecule
from conftest import make_model
from training_helpers import make_run

from sevenomni.data.graph import atoms_to_graph, collate
from sevenomni.data.statistics import force_rms
from sevenomni.nn.config import ModelConfig
from sevenomni.nn.task import UNPENALIZED_TASK_PARAMETERS
from sevenomni.train.config import ConfigError, load_config
from sevenomni.train.regularization import WeightPenalty
from sevenomni.train.trainer import Trainer

TREATMENTS = [True, False, "penalized", "fixed"]


def unpenalized_trainable_task_parameters(model) -> set[str]:
    penalized = {id(p) for p in WeightPenalty(model, "task", 1.0).parameters()}
    return {name for name, p in model.task_parameters() if p.requires_grad and id(p) not in penalized}


@pytest.mark.parametrize("treatment", TREATMENTS)
@pytest.mark.parametrize("linear_correction", [False, True])
def test_every_trainable_task_parameter_is_penalized_or_a_documented_exemption(treatment, linear_correction):
    model = make_model(scale_per_task=treatment, linear_correction=linear_correction)
    outside = unpenalized_trainable_task_parameters(model)
    exempt = {name for name in outside if name.removesuffix(".weight") in UNPENALIZED_TASK_PARAMETERS}
    assert outside == exempt, f"task-specific, trained, not penalized and not exempt: {sorted(outside - exempt)}"
    # the free per-task scale is the one treatment that leaves a trained scale outside θT
    assert ("energy_scale.weight" in outside) == (treatment is True)


def batch_of(model, atoms, task: int):
    graph = atoms_to_graph(atoms, model.cutoff)
    graph.task = torch.tensor([task])
    return collate([graph])


def test_penalized_scale_is_theta_t():
    model = make_model(scale_per_task="penalized")
    offsets = model.energy_scale.embedding.weight
    assert any(p is offsets for _, p in model.task_embedding_parameters())
    with torch.no_grad():
        offsets.copy_(torch.tensor([[0.3], [-0.2]], dtype=offsets.dtype))
    penalty = WeightPenalty(model, "task", 2.0)()
    (gradient,) = torch.autograd.grad(penalty, offsets)
    torch.testing.assert_close(gradient, 2.0 * offsets.detach())

    atoms = molecule("CH3OH")
    batch = batch_of(model, atoms, task=1)
    own = model(batch, compute_stress=False)
    common = model(batch, common=True, compute_stress=False)
    with torch.no_grad():
        offsets.zero_()
    shared = model(batch, compute_stress=False)
    common_at_zero = model(batch, common=True, compute_stress=False)
    # the common channel drops s_t; the task channel scales the shift-free energy by exp(s_t)
    torch.testing.assert_close(common["forces"], common_at_zero["forces"])
    torch.testing.assert_close(own["forces"], shared["forces"] * math.exp(-0.2))

    model.append_task("new")
    assert float(model.energy_scale.embedding.weight[-1, 0]) == 0.0


def test_scale_per_task_rejects_unknown_treatments():
    with pytest.raises(ValueError, match="scale_per_task"):
        ModelConfig(tasks=["a"], elements=["H"], scale_per_task="learned")


def test_fixed_scale_is_each_tasks_force_rms_and_never_trains(tmp_path):
    raw = make_run(tmp_path, overrides={"model.scale_per_task": "fixed", "stages.0.steps": 2})
    trainer = Trainer(load_config(raw=raw))
    scale = trainer.model.energy_scale.weight.detach().clone()
    assert not trainer.model.energy_scale.weight.requires_grad
    for database in trainer.databases:
        expected = force_rms([database.train], sample=trainer.config.data.statistics_sample, seed=0)
        assert np.isclose(float(scale[database.task_index, 0]), expected, rtol=1e-12), database.spec.name
    assert not np.isclose(float(scale[0, 0]), float(scale[1, 0]))
    trainer.run()
    torch.testing.assert_close(trainer.model.energy_scale.weight, scale, rtol=0, atol=0)


def test_scale_treatment_is_a_validated_config_key(tmp_path):
    raw = make_run(tmp_path)
    with pytest.raises(ConfigError, match="scale_per_task"):
        load_config(raw=raw, overrides=["model.scale_per_task=bogus"])
    assert load_config(raw=raw, overrides=["model.scale_per_task=penalized"]).model.scale_per_task == "penalized"
