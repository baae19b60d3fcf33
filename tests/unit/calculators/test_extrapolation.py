"""Extrapolation warnings: an element a task never saw, or one without a fitted shift (issue 25, friction 9)."""

from __future__ import annotations

import warnings

import pytest
import torch
from ase.build import bulk, molecule
from ase.io import read, write
from conftest import make_model

from sevenomni import SevenOmniCalculator, load_model, save_checkpoint
from sevenomni.calculators.extrapolation import ExtrapolationWarning
from sevenomni.cli import main
from sevenomni.nn import ModelConfig

torch.set_num_threads(1)


def recorded_model():
    """Crystal task trained on Si and C, molecule task on H, C and O (the model knows H C N O Si)."""
    model = make_model()
    model.record_task_elements("crystal", ["Si", "C"])
    model.record_task_elements("molecule", ["O", "H"])
    model.record_task_elements("MOLECULE", ["C"])
    return model


def extrapolation_warnings(action) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        action()
    return [str(w.message) for w in caught if issubclass(w.category, ExtrapolationWarning)]


def energy(model, atoms, **channel):
    atoms = atoms.copy()
    atoms.calc = SevenOmniCalculator(model, device="cpu", **channel)
    return atoms.get_potential_energy()


def test_an_element_a_task_never_saw_warns_once():
    model = recorded_model()
    assert model.task_elements("molecule") == ["H", "C", "O"]
    assert issubclass(ExtrapolationWarning, UserWarning)
    methane = molecule("CH4")
    (message,) = extrapolation_warnings(lambda: energy(model, methane, task="crystal"))
    assert message == "task 'crystal' was trained on C Si, not on H: its predictions for H extrapolate"
    assert extrapolation_warnings(lambda: energy(model, methane, task="crystal")) == []  # once per model
    assert extrapolation_warnings(lambda: energy(model, methane, task="molecule")) == []  # seen elements
    assert extrapolation_warnings(lambda: energy(model, molecule("H2O"), task="crystal")) == [
        "task 'crystal' was trained on C Si, not on O: its predictions for O extrapolate"
    ]
    # the common channel saw what any task saw: N only is new
    common = extrapolation_warnings(lambda: energy(model, molecule("CH3CN"), task="common", shift_task="crystal"))
    assert common == ["common (shifts of 'crystal') was trained on H C O Si, not on N: its predictions for N extrapolate"]
    assert len(extrapolation_warnings(lambda: energy(recorded_model(), methane, task="crystal"))) == 1  # another model


def test_an_element_without_a_fitted_shift_warns():
    model = make_model()  # no record: only the shifts speak
    with torch.no_grad():
        model.energy_shift.weight[1, model.elements.index("Si")] = 0.0
    silicon = bulk("Si", "diamond", a=5.43)
    (message,) = extrapolation_warnings(lambda: energy(model, silicon, task="molecule"))
    assert "task 'molecule': Si has no fitted energy shift for task 'molecule' (it is zero)" in message
    assert extrapolation_warnings(lambda: energy(model, silicon, task="crystal")) == []
    unrecorded_zero = make_model()
    with torch.no_grad():
        unrecorded_zero.energy_shift.weight[1, model.elements.index("Si")] = 0.0
    unrecorded_zero.record_task_elements("molecule", ["H"])  # unseen and unfitted: one warning saying both
    assert extrapolation_warnings(lambda: energy(unrecorded_zero, silicon, task="molecule")) == [
        "task 'molecule' was trained on H, not on Si: its predictions for Si extrapolate; "
        "Si has no fitted energy shift for task 'molecule' (it is zero)"
    ]


def test_no_record_and_no_fitted_shifts_draw_no_warning():
    model = make_model()
    assert model.config.task_elements is None
    assert extrapolation_warnings(lambda: energy(model, molecule("CH3CN"), task="crystal")) == []
    with torch.no_grad():
        model.energy_shift.weight.zero_()  # an untrained model: no shift fitted at all, nothing to compare
    model.record_task_elements("crystal", ["C", "H", "N"])
    assert extrapolation_warnings(lambda: energy(model, molecule("CH3CN"), task="crystal")) == []


def test_predict_and_eval_warn(tmp_path):
    model = recorded_model()
    save_checkpoint(model, tmp_path / "model.pt")
    structures = [molecule("CH4"), molecule("H2O")]
    for atoms in structures:
        atoms.info["REF_energy"] = -1.0
    write(tmp_path / "molecules_molecule.extxyz", structures, format="extxyz")
    predicted = extrapolation_warnings(lambda: main([
        "predict", str(tmp_path / "model.pt"), str(tmp_path / "molecules_molecule.extxyz"), "--task", "crystal",
        "-o", str(tmp_path / "out.extxyz"), "--device", "cpu", "--batch-size", "1",
    ]))
    assert predicted == [f"task 'crystal' was trained on C Si, not on {e}: its predictions for {e} extrapolate"
                         for e in ("H", "O")]
    scored = extrapolation_warnings(lambda: main([
        "eval", str(tmp_path / "model.pt"), str(tmp_path / "molecules_molecule.extxyz"), "--out",
        str(tmp_path / "eval"), "--workers", "0", "--cache-dir", str(tmp_path / "cache"), "--quiet",
    ]))
    assert sorted(scored) == sorted(
        [f"task 'crystal' was trained on C Si, not on {e}: its predictions for {e} extrapolate" for e in ("H", "O")]
    )  # the molecule task and the common channel saw H, C and O


def test_the_record_is_saved_validated_and_shown(tmp_path, capsys):
    model = recorded_model()
    save_checkpoint(model, tmp_path / "model.pt")
    assert load_model(tmp_path / "model.pt").config.task_elements == {"crystal": ["C", "Si"], "molecule": ["H", "C", "O"]}
    assert main(["info", str(tmp_path / "model.pt")]) == 0
    printed = capsys.readouterr().out
    assert "  crystal: C Si\n  molecule: H C O\n" in printed
    save_checkpoint(make_model(), tmp_path / "old.pt")
    assert main(["info", str(tmp_path / "old.pt")]) == 0
    assert "crystal: not recorded" in capsys.readouterr().out
    settings = dict(tasks=["a"], elements=["H", "C"])
    with pytest.raises(ValueError, match=r"task_elements name unknown task\(s\) \['b'\]"):
        ModelConfig(**settings, task_elements={"b": ["H"]})
    with pytest.raises(ValueError, match=r"task_elements of 'a': \['O'\] not among the model's elements"):
        ModelConfig(**settings, task_elements={"a": ["O"]})


def test_training_records_each_tasks_elements(tmp_path):
    from training_helpers import make_run

    from sevenomni.train.config import load_config
    from sevenomni.train.trainer import Trainer

    raw = make_run(tmp_path, count=4)
    trainer = Trainer(load_config(raw=raw))
    recorded = trainer.model.config.task_elements
    for name, task in (("crystal", "gfn1"), ("molecule", "gfn2")):
        elements = {symbol for atoms in read(tmp_path / f"{name}.extxyz", ":") for symbol in atoms.symbols}
        assert set(recorded[task]) == elements


def test_fine_tuning_adds_to_a_record_and_never_invents_one():
    from types import SimpleNamespace

    from sevenomni.nn.task_names import Tasks
    from sevenomni.train.setup import record_task_elements

    def database(name, task_index, elements):
        return SimpleNamespace(spec=SimpleNamespace(name=name), task_index=task_index,
                               train=SimpleNamespace(elements=elements))

    config = SimpleNamespace(trained_databases={"bulk", "slab"})
    data = [database("bulk", 0, ["Si"]), database("slab", 1, ["N", "H"]), database("unused", 1, ["O"])]
    old = make_model()  # a checkpoint from before the record: its tasks' earlier data is unknown
    record_task_elements(old, config, data, trained_before=Tasks(["crystal"]))
    assert old.config.task_elements == {"molecule": ["H", "N"]}  # crystal stays unrecorded, "unused" not trained
    recorded = recorded_model()
    record_task_elements(recorded, config, data, trained_before=Tasks(["crystal", "molecule"]))
    assert recorded.config.task_elements == {"crystal": ["C", "Si"], "molecule": ["H", "C", "N", "O"]}
