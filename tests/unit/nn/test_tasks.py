"""Task channels, the common PES and the declared shared / task-specific split."""

import copy

import numpy as np
import pytest
import torch
from conftest import make_model, structures

from sevenomni import predict


def energies(model, task, shift_task=None):
    return np.array([r["energy"] for r in predict(model, list(structures().values()), task, shift_task)])


@pytest.fixture(scope="module")
def model():
    return make_model(task_embedding_sites=["si1", "si2", "readout"])


def test_parameter_roles_are_disjoint_and_complete(model):
    shared = {name for name, _ in model.shared_parameters()}
    task = {name for name, _ in model.task_parameters()}
    embeddings = {name for name, _ in model.task_embedding_parameters()}
    assert shared.isdisjoint(task)
    assert shared | task == {name for name, _ in model.named_parameters()}
    assert embeddings < task
    assert task - embeddings == {"energy_shift.weight", "energy_scale.weight"}
    # Two interaction layers with SI-1 and SI-2 plus the readout.
    assert len(embeddings) == 5
    assert all(p.shape[0] == len(model.tasks) for _, p in model.task_parameters())


@pytest.mark.parametrize("scale_per_task", [True, False, "penalized", "fixed"])
def test_every_parameter_has_the_role_its_module_declares(scale_per_task):
    from sevenomni.nn import ParameterRole, parameter_roles

    model = make_model(task_embedding_sites=["si1", "si2", "readout"], scale_per_task=scale_per_task,
                       linear_correction=True)
    roles = [(name, role) for name, _, role in parameter_roles(model)]
    assert [name for name, _ in roles] == [name for name, _ in model.named_parameters()]  # each once
    task_scale = scale_per_task in (True, "fixed")
    expected = {
        "energy_shift.weight": ParameterRole.TASK_EXEMPT,
        "energy_scale.weight": ParameterRole.TASK_EXEMPT if task_scale else ParameterRole.SHARED_EXEMPT,
        "linear_correction.weight": ParameterRole.TASK_EXEMPT,
    }
    for name, role in roles:
        if name.endswith(".embedding.weight"):
            assert role is ParameterRole.TASK_PENALIZED, name
        else:
            assert role is expected.get(name, ParameterRole.SHARED), name
    penalized = [name for name, role in roles if role is ParameterRole.TASK_PENALIZED]
    assert len(penalized) == 5 + (scale_per_task == "penalized")  # and energy_scale.embedding.weight
    assert penalized == [name for name, _ in model.task_embedding_parameters()]


@pytest.mark.parametrize("sites", [["si1"], ["si2"], ["readout"], []])
def test_embedding_sites_are_configurable(sites):
    model = make_model(task_embedding_sites=sites)
    assert len(list(model.task_embedding_parameters())) == len(sites) * (1 if sites == ["readout"] else 2)


def test_channels_differ_once_theta_t_is_nonzero(model):
    shifted = copy.deepcopy(model)
    with torch.no_grad():
        shifted.energy_shift.weight.zero_()
        shifted.energy_scale.weight.fill_(1.0)
    assert np.abs(energies(shifted, "crystal") - energies(shifted, "molecule")).min() > 1e-4


def test_common_channel_differs_from_every_task_channel(model):
    # That it equals the model with θT = 0 is checked for every configuration by sevenomni/testing/physics.py.
    for task in model.tasks:
        assert np.abs(energies(model, "common", task) - energies(model, task)).max() > 1e-4


def test_task_names_match_case_insensitively_and_unknown_ones_fail(model):
    np.testing.assert_array_equal(energies(model, "CRYSTAL"), energies(model, "crystal"))
    with pytest.raises(ValueError, match=r"unknown task 'pbe'.*crystal.*molecule"):
        next(predict(model, [structures()["molecule"]], "pbe"))
    with pytest.raises(ValueError, match="several tasks"):
        next(predict(model, [structures()["molecule"]], None))
    with pytest.raises(ValueError, match="common channel needs"):
        next(predict(model, [structures()["molecule"]], "common"))


def test_single_task_model_needs_no_task():
    model = make_model(tasks=["pbe"])
    a = next(predict(model, [structures()["diamond"]]))
    b = next(predict(model, [structures()["diamond"]], "PBE"))
    assert a["energy"] == b["energy"]


def test_append_task_keeps_existing_channels_and_starts_on_common(model):
    grown = copy.deepcopy(model)
    grown.append_task("surface", like="crystal")
    assert grown.tasks == ["crystal", "molecule", "surface"]
    for task in model.tasks:
        np.testing.assert_allclose(energies(grown, task), energies(model, task), atol=1e-12)
    np.testing.assert_allclose(energies(grown, "surface"), energies(model, "common", "crystal"), atol=1e-12)
    with pytest.raises(ValueError, match="exists already"):
        grown.append_task("Surface")


def test_invalid_task_lists_are_rejected():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unique"):
        make_model(tasks=["pbe", "PBE"])
    with pytest.raises(ValidationError, match="reserved"):
        make_model(tasks=["pbe", "common"])


def test_shift_task_beside_a_task_channel_is_an_error(model):
    with pytest.raises(ValueError, match=r"shift_task 'molecule'.*only with the 'common' channel"):
        next(predict(model, [structures()["molecule"]], "crystal", "molecule"))
    with pytest.raises(ValueError, match="only with the 'common' channel"):
        next(predict(make_model(tasks=["pbe"]), [structures()["molecule"]], None, "pbe"))


def test_tasks_value_object_matches_names_case_insensitively():
    import json

    from sevenomni.nn import Tasks

    tasks = Tasks(["PBE", "gfn1"])
    assert tasks.index("pbe") == 0 and tasks.canonical("GFN1") == "gfn1" and "Pbe" in tasks
    assert tasks == ["PBE", "gfn1"] and json.loads(json.dumps(tasks)) == ["PBE", "gfn1"]
    assert tasks.extended(["pbe", "r2scan"]) == ["PBE", "gfn1", "r2scan"]
    with pytest.raises(ValueError, match=r"unknown task 'omol'; the tasks are \['PBE', 'gfn1'\]"):
        tasks.index("omol")
    with pytest.raises(ValueError, match="unique"):
        Tasks(["a", "A"])
    with pytest.raises(ValueError, match="reserved"):
        Tasks(["Common"])
