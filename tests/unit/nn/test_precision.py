"""Reduced precision, opt-in: bfloat16 radial networks (autocast around them only) and TF32 matmuls."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_model, structures
from training_helpers import make_run

from sevenomni.data.graph import atoms_to_graph, collate
from sevenomni.train.config import ConfigError, load_config
from sevenomni.train.trainer import Trainer


def outputs(model, atoms):
    graph = collate([atoms_to_graph(atoms, model.cutoff)])
    graph.task = torch.tensor([1])
    return model(graph)


@pytest.mark.parametrize("name", ["triclinic", "molecule", "slab"])
def test_bfloat16_radial_networks_stay_within_bfloat16_rounding_of_float32(name):
    model = make_model(dtype="float32")
    atoms = structures()[name]
    full = outputs(model, atoms)
    reduced = outputs(model.set_radial_precision("bfloat16"), atoms)
    assert reduced["energy"].dtype == torch.float32  # only the radial networks change dtype
    force_error = float((reduced["forces"] - full["forces"]).norm() / full["forces"].norm())
    assert 0 < force_error < 0.03  # bf16 keeps 8 significant bits (~0.4 %); the model adds up many such terms
    assert math.isclose(reduced["energy"].item(), full["energy"].item(), rel_tol=1e-2, abs_tol=1e-3)
    back = outputs(model.set_radial_precision("model"), atoms)
    assert torch.equal(back["forces"], full["forces"])


def test_unknown_radial_precision_names_the_choices():
    with pytest.raises(ValueError, match="model, bfloat16"):
        make_model().set_radial_precision("float16")


def test_a_run_applies_its_precision_settings_and_trains_with_forces(tmp_path):
    saved = torch.backends.cuda.matmul.allow_tf32
    overrides = {"train.radial_precision": "bfloat16", "train.tf32": True, "stages.0.steps": 2}
    try:
        trainer = Trainer(load_config(raw=make_run(tmp_path, overrides=overrides)))
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert all(layer.conv.radial_dtype == torch.bfloat16 for layer in trainer.model.layers)
        trainer.run()  # the double backward of force training goes through the autocast region
        assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    finally:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = saved
    with pytest.raises(ConfigError, match="radial_precision"):
        load_config(raw=make_run(tmp_path, overrides={"train.radial_precision": "float16"}))
