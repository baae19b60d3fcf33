"""Fine-tuning a trained model: energy shifts refit to the new data, new elements added on request."""

from __future__ import annotations

import csv
import logging

import pytest
import torch
from ase.build import molecule
from ase.io import read, write
from training_helpers import make_run

import sevenomni
from sevenomni import SevenOmniModel, load_model, save_checkpoint
from sevenomni.data.graph import atoms_to_graph, collate
from sevenomni.nn.elements import extend_elements
from sevenomni.train.config import ConfigError, load_config
from sevenomni.train.trainer import Trainer

OFFSET = 3.0  # eV per atom


def molecules_only(raw: dict, steps: int) -> dict:
    raw["data"]["databases"] = raw["data"]["databases"][1:]
    raw["stages"] = [{"name": "m", "databases": ["molecule"], "steps": steps}]
    return raw


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """A tiny model trained a few steps on molecules (H, C, N, O), task gfn2."""
    tmp_path = tmp_path_factory.mktemp("base")
    Trainer(load_config(raw=molecules_only(make_run(tmp_path), steps=4))).run()
    return tmp_path / "run" / "model.pt"


def fine_tune_run(tmp_path, base_model, offset: float = OFFSET, **finetune) -> dict:
    """Fine-tuning ``base_model`` on molecules whose energies are ``offset`` eV per atom higher."""
    raw = molecules_only(make_run(tmp_path), steps=1)
    raw["model"] = {"init_from": str(base_model)}
    raw["train"]["finetune"] = finetune
    path = raw["data"]["databases"][0]["path"]
    structures = read(path, ":")
    for atoms in structures:
        atoms.info["REF_energy"] += offset * len(atoms)
    write(path, structures, format="extxyz")
    return raw


def initial_energy_mae(tmp_path) -> float:
    """The fine-tuned run's energy MAE (meV/atom) before its first step, on its validation split."""
    (row,) = csv.DictReader(open(tmp_path / "run" / "initial.csv"))
    return float(row["energy_mae"])


def test_fine_tuning_into_an_existing_task_refits_its_shifts(tmp_path, base_model, caplog):
    with caplog.at_level(logging.INFO, logger="sevenomni"):
        Trainer(load_config(raw=fine_tune_run(tmp_path, base_model))).run()
    assert initial_energy_mae(tmp_path) < 300  # far below the 3,000 meV/atom offset
    (line,) = [r.getMessage() for r in caplog.records if "before the refit" in r.getMessage()]
    before = float(line.split("energy MAE on those structures ")[1].split(" meV/atom")[0])
    assert before == pytest.approx(1000 * OFFSET, abs=300)


def test_keep_energy_shifts_starts_at_the_offset(tmp_path, base_model):
    Trainer(load_config(raw=fine_tune_run(tmp_path, base_model, keep_energy_shifts=True))).run()
    assert initial_energy_mae(tmp_path) == pytest.approx(1000 * OFFSET, abs=300)


def test_finetune_options_need_a_checkpoint(tmp_path):
    raw = make_run(tmp_path)
    raw["train"]["finetune"] = {"keep_energy_shifts": True}
    with pytest.raises(ConfigError, match=r"train.finetune \['keep_energy_shifts'\] applies to fine-tuning"):
        load_config(raw=raw)


def small_model(elements: list[str], **settings) -> SevenOmniModel:
    """A tiny random model (task gfn2) with non-zero shifts, per-element scales and task embeddings."""
    torch.manual_seed(0)
    model = sevenomni.build_model(
        ["gfn2"], elements, dtype="float64", channels=4, lmax=1, num_layers=2, cutoff=3.5, radial_mlp=[8], **settings
    )
    with torch.no_grad():
        model.energy_shift.weight.normal_(-20.0, 5.0)
        model.energy_scale.weight.uniform_(0.5, 1.5)
        for _, parameter in model.task_embedding_parameters():
            parameter.normal_(0.0, 0.5)
    return model.eval()


def predict(model: SevenOmniModel, atoms) -> dict[str, torch.Tensor]:
    graph = collate([atoms_to_graph(atoms, model.cutoff)])
    return model(graph)


@pytest.mark.parametrize("self_connection", ["species", "linear"])
def test_extending_a_model_with_an_element_keeps_its_predictions_and_round_trips(tmp_path, self_connection):
    model = small_model(["H", "O"], self_connection=self_connection, scale_per_element=True)
    water = molecule("H2O")
    water.rattle(0.05, seed=1)
    before = predict(model, water)
    grown = extend_elements(model, ["C"])
    assert grown.elements == ["H", "C", "O"] and model.elements == ["H", "O"]
    after = predict(grown, water)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=1e-12)
    shift = grown.energy_shift.weight[0]
    assert shift[1] == 0 and torch.equal(shift[[0, 2]], model.energy_shift.weight[0])
    ethanol = predict(grown, molecule("CH3CH2OH"))
    assert torch.isfinite(ethanol["energy"]).all() and torch.isfinite(ethanol["forces"]).all()
    save_checkpoint(grown, tmp_path / "grown.pt")
    loaded = load_model(tmp_path / "grown.pt")
    assert loaded.elements == ["H", "C", "O"]
    torch.testing.assert_close(predict(loaded, water)["energy"], after["energy"], rtol=0, atol=0)


def test_fine_tuning_onto_new_elements_needs_add_elements(tmp_path, caplog):
    save_checkpoint(small_model(["H", "O"]), tmp_path / "ho.pt")
    raw = fine_tune_run(tmp_path, tmp_path / "ho.pt", offset=0.0)
    with pytest.raises(ValueError, match=r"element\(s\) \['C', 'N'\] not in this model's elements \['H', 'O'\]; "
                       r"set train.finetune.add_elements: true"):
        Trainer(load_config(raw=raw))
    raw["train"]["finetune"] = {"add_elements": True, "keep_energy_shifts": True}
    with caplog.at_level(logging.INFO, logger="sevenomni"):
        model = Trainer(load_config(raw=raw)).run()  # the failed start left nothing to refuse this one
    assert model.elements == ["H", "C", "N", "O"]
    assert "extended with element(s) C, N" in caplog.text
    shift = model.energy_shift.weight[0].detach()
    assert bool((shift[1:3] < -1).all())  # C and N fitted by regression (GFN2 atoms: tens of eV below 0)
    assert load_model(tmp_path / "run" / "model.pt").elements == ["H", "C", "N", "O"]


def test_a_shift_fit_does_not_depend_on_the_order_elements_are_named_in(tmp_path):
    """Every rank of a run fits the same shifts: the fit's columns follow the model, not a set's order."""
    import copy

    from sevenomni.train.curriculum import fit_task_shift
    from sevenomni.train.data import plain_loader

    trainer = Trainer(load_config(raw=make_run(tmp_path, overrides={"stages.0.steps": 1})))
    database = trainer.databases[0]
    elements = sorted(database.train.elements)
    fits = []
    for order in (elements, elements[::-1]):
        model = copy.deepcopy(trainer.model)
        fits.append(fit_task_shift(model, plain_loader(database.train, batch_size=4), 0, trainer.device, order).shifts)
    assert fits[0].tobytes() == fits[1].tobytes()
