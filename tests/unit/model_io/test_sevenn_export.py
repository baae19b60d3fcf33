"""sevenomni models imported from SevenNet (and changed as fine-tuning changes them) export back
to SevenNet checkpoints that SevenNet's own loader reads and that predict what sevenomni predicts;
features SevenNet cannot represent are refused by name."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

sevenn = pytest.importorskip("sevenn")

from sevenomni import CheckpointError, SevenOmniCalculator  # noqa: E402
from sevenomni.cli import main  # noqa: E402
from sevenomni.model_io.checkpoint import save_checkpoint  # noqa: E402
from sevenomni.model_io.sevenn.convert import import_sevenn, load_sevenn_model  # noqa: E402
from sevenomni.model_io.sevenn.export import model_to_sevenn  # noqa: E402
from sevenomni.model_io.sevenn.files import read_sevenn_checkpoint, resolve_sevenn_checkpoint  # noqa: E402

E_TOL, F_TOL = 1e-5, 1e-4  # eV/atom, eV/Å (float32)


def perturbed(name: str, seed: int = 0):
    """The imported model with every weight moved a little, as fine-tuning would."""
    model = load_sevenn_model(name)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return model


def structures():
    nacl = bulk("NaCl", "rocksalt", a=5.6, cubic=True)
    nacl.rattle(0.1, seed=1)
    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.05, seed=2)
    return [nacl, ethanol]


def predict(calculator, atoms):
    atoms = atoms.copy()
    atoms.calc = calculator
    return atoms.get_potential_energy(), atoms.get_forces()


def assert_same_predictions(model, path, tasks):
    from sevenn.calculator import SevenNetCalculator
    from sevenn.util import model_from_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, config = model_from_checkpoint(str(path))
    if tasks != [None]:
        assert config["_modal_map"] == {task: index for index, task in enumerate(tasks)}
    for task in tasks:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = SevenNetCalculator(str(path), file_type="checkpoint", device="cpu", modal=task)
        ours = SevenOmniCalculator(model, task=task, device="cpu")
        for atoms in structures():
            (e_theirs, f_theirs), (e_ours, f_ours) = predict(theirs, atoms), predict(ours, atoms)
            assert abs(e_theirs - e_ours) / len(atoms) < E_TOL, (task, e_theirs, e_ours)
            assert np.abs(f_theirs - f_ours).max() < F_TOL, task


def test_fine_tuned_7net0_round_trips_through_sevenn(tmp_path):
    model = perturbed("7net-0")
    source = tmp_path / "tuned.pt"
    save_checkpoint(model, source)
    out = tmp_path / "tuned.pth"
    assert main(["export-sevenn", str(source), str(out), "--template", "7net-0"]) == 0
    assert_same_predictions(model, out, [None])


def test_fine_tuned_mf0_with_an_appended_task_round_trips_through_sevenn(tmp_path):
    model = perturbed("7net-mf-0", seed=1)
    model.append_task("wB97", like="PBE")
    with torch.no_grad():  # the new task trained a little: its own θT rows and shifts
        for name, parameter in model.named_parameters():
            if name.endswith("embedding.weight") or name == "energy_shift.weight":
                parameter[-1].add_(0.05)
    template = read_sevenn_checkpoint(resolve_sevenn_checkpoint("7net-mf-0"))
    out = tmp_path / "mf.pth"
    torch.save(model_to_sevenn(model, template), out)
    assert_same_predictions(model, out, ["R2SCAN", "PBE", "wB97"])


def test_default_template_is_the_one_imported_from(tmp_path, capsys):
    imported = tmp_path / "imported.pt"
    import_sevenn("7net-0", imported)
    assert main(["export-sevenn", str(imported), str(tmp_path / "a.pth")]) == 0
    plain = tmp_path / "plain.pt"
    save_checkpoint(load_sevenn_model("7net-0"), plain)  # records no origin
    assert main(["export-sevenn", str(plain), str(tmp_path / "b.pth")]) == 2
    assert "--template" in capsys.readouterr().err


@pytest.fixture(scope="module")
def template():
    return read_sevenn_checkpoint(resolve_sevenn_checkpoint("7net-0"))


@pytest.fixture(scope="module")
def mf_template():
    return read_sevenn_checkpoint(resolve_sevenn_checkpoint("7net-mf-0"))


def test_unrepresentable_features_are_refused_by_name(template, mf_template):
    model = load_sevenn_model("7net-0")
    model.append_task("other")
    with pytest.raises(CheckpointError, match="more than one task"):
        model_to_sevenn(model, template)

    model = load_sevenn_model("7net-0")
    model.enable_linear_correction()
    with pytest.raises(CheckpointError, match="linear correction"):
        model_to_sevenn(model, template)

    mf = load_sevenn_model("7net-mf-0")
    with pytest.raises(CheckpointError, match="use_modality false"):
        model_to_sevenn(mf, template)


@pytest.mark.parametrize(
    "name,change,feature",
    [
        ("7net-0", {"scale_per_task": "penalized"}, "scale_per_task: penalized"),
        ("7net-0", {"elements": ["H", "Og"]}, r"elements \['Og'\] outside the template's type map"),
        ("7net-0", {"channels": 16}, "the model's channels"),
        ("7net-mf-0", {"task_embedding_sites": ["si1", "si2"]}, "θT at sites"),
        ("7net-mf-0", {"task_embedding_norm": True}, "task_embedding_norm"),
    ],
)
def test_config_features_are_refused_by_name(template, mf_template, name, change, feature):
    from sevenomni.nn import SevenOmniModel

    model = SevenOmniModel(load_sevenn_model(name).config.model_copy(update=change))
    with pytest.raises(CheckpointError, match=feature):
        model_to_sevenn(model, mf_template if name == "7net-mf-0" else template)


def test_delta_learning_baseline_is_refused(template):
    from sevenomni.core.baseline import BaselineSpec

    model = load_sevenn_model("7net-0")
    model.set_baseline("sevenn", BaselineSpec(calculator="ase.calculators.emt:EMT"))
    with pytest.raises(CheckpointError, match="Δ-learning baseline"):
        model_to_sevenn(model, template)
