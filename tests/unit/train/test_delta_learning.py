"""Δ-learning: a task trained on reference − baseline (GFN1 on top of GFN2-xTB here, so labels are cheap)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from ase.io import read, write
from ase.stress import full_3x3_to_voigt_6_stress, voigt_6_to_full_3x3_stress

pytest.importorskip("tblite")

from training_helpers import BASE, TINY  # noqa: E402

from sevenomni import SevenOmniCalculator, load_model, predict  # noqa: E402
from sevenomni.analysis.evaluate import choose_channels, evaluate_databases, open_sources  # noqa: E402
from sevenomni.core.baseline import BaselineError, BaselineSpec, build_calculator  # noqa: E402
from sevenomni.data.ingest import ingest  # noqa: E402
from sevenomni.data.store import StoreReader  # noqa: E402
from sevenomni.train.config import ConfigError, load_config  # noqa: E402
from sevenomni.train.trainer import Trainer  # noqa: E402

GFN2 = BaselineSpec.model_validate("gfn2-xtb")


def gfn2(atoms, stress):
    """GFN2-xTB straight from tblite, as an independent reference."""
    structure = atoms.copy()
    structure.calc = build_calculator(GFN2.calculator, GFN2.kwargs)
    return structure.get_potential_energy(), structure.get_forces(), structure.get_stress(voigt=False) if stress else None


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("delta")
    crystals = read(TINY / "crystal_gfn1.extxyz", ":")
    molecules = read(TINY / "test_molecule_gfn1.extxyz", "::6")[:4]
    write(tmp / "train.extxyz", [crystals[0], crystals[27]] + molecules[:2], format="extxyz")  # C16, Si16
    write(tmp / "test.extxyz", molecules[2:], format="extxyz")
    write(tmp / "scf_fails.extxyz", [crystals[39]], format="extxyz")  # SiC: GFN2's SCF does not converge
    return tmp


def test_ingest_stores_reference_minus_baseline(sets, tmp_path):
    ingest([sets / "train.extxyz"], tmp_path / "store", baseline=GFN2)
    structures = read(sets / "train.extxyz", ":")
    with StoreReader(tmp_path / "store") as reader:
        assert len(reader) == len(structures)
        assert reader.label_sources["energy"] == "info:REF_energy - gfn2-xtb"
        for i, atoms in enumerate(structures):
            record = reader.read(i)
            stress = "REF_stress" in atoms.info
            energy, forces, virial = gfn2(atoms, stress)
            assert record["energy"] == pytest.approx(atoms.info["REF_energy"] - energy, abs=1e-8)
            np.testing.assert_allclose(record["forces"], atoms.arrays["REF_forces"] - forces, atol=1e-8)
            if stress:
                expected = voigt_6_to_full_3x3_stress(atoms.info["REF_stress"]) - virial
                np.testing.assert_allclose(record["stress"], expected, atol=1e-10)
        assert sum("REF_stress" in atoms.info for atoms in structures) == 2


def test_a_structure_the_baseline_cannot_compute_is_bad_and_counted(sets, tmp_path):
    from sevenomni.data.ingest import IngestError
    from sevenomni.data.readers import InvalidRecordError

    with pytest.raises(InvalidRecordError, match="baseline gfn2-xtb.*baseline_failed"):
        ingest([sets / "scf_fails.extxyz"], tmp_path / "strict", baseline=GFN2)
    with pytest.raises(IngestError, match="baseline_failed"):
        ingest([sets / "scf_fails.extxyz"], tmp_path / "skip", baseline=GFN2, skip_bad=True)


def delta_run(sets, tmp_path, steps=4):
    raw = copy.deepcopy(BASE)
    raw["data"]["databases"] = [
        {"name": "train", "path": str(sets / "train.extxyz"), "task": "gfn1", "baseline": "gfn2-xtb",
         "split": {"valid_fraction": 0.0}},
        {"name": "test", "path": str(sets / "test.extxyz"), "task": "gfn1", "baseline": "gfn2-xtb"},
    ]
    raw["data"]["sampling"]["batch_size"] = 3
    raw["data"]["cache_dir"] = str(tmp_path / "cache")
    raw["train"]["run_dir"] = str(tmp_path / "run")
    raw["stages"] = [{"name": "delta", "databases": ["train"], "steps": steps}]
    trainer = Trainer(load_config(raw=raw))
    trainer.run()
    return trainer


def test_predictions_are_model_plus_baseline_and_scores_agree(sets, tmp_path):
    trainer = delta_run(sets, tmp_path)
    model = load_model(tmp_path / "run" / "model.pt")
    assert model.baseline_of("GFN1") == GFN2

    alone = copy.deepcopy(model)
    alone.set_baseline("gfn1", None)
    structures = read(sets / "test.extxyz", ":") + read(sets / "train.extxyz", ":1")
    for atoms, total, delta in zip(structures, predict(model, structures, "gfn1", device="cpu"),
                                   predict(alone, structures, "gfn1", device="cpu")):
        stress = "stress" in total
        energy, forces, virial = gfn2(atoms, stress)
        assert total["energy"] == pytest.approx(delta["energy"] + energy, abs=1e-8)
        np.testing.assert_allclose(total["forces"], delta["forces"] + forces, atol=1e-8)
        if stress:
            np.testing.assert_allclose(total["stress"], delta["stress"] + full_3x3_to_voigt_6_stress(virial), atol=1e-8)
        assert "energies" not in total

    calculator = SevenOmniCalculator(model, task="gfn1", device="cpu")
    atoms = structures[0].copy()
    atoms.calc = calculator
    assert atoms.get_potential_energy() == pytest.approx(next(iter(predict(model, [structures[0]], "gfn1", device="cpu")))["energy"])
    assert "energies" not in calculator.implemented_properties

    # Validation scored the model alone against Δ labels; eval scores model + baseline against the
    # reference labels of the same structures: the errors are the same.
    (validated,) = [row for row in trainer.final_metrics if row["database"] == "test"]
    databases = open_sources([sets / "test.extxyz"], model, tmp_path / "eval-cache", own={"test": "gfn1"})
    choose_channels(databases[0], model, "gfn1")
    (scored,) = evaluate_databases(model, databases, device="cpu").rows
    assert scored["forces_mae"] == pytest.approx(validated["forces_mae"], rel=1e-9)
    assert scored["energy_mae"] == pytest.approx(validated["energy_mae"], rel=1e-9)


def test_baseline_settings_are_checked(sets, tmp_path):
    with pytest.raises(ValueError, match="module:Class"):
        BaselineSpec.model_validate("not-a-method")
    with pytest.raises(BaselineError, match="cannot import"):
        build_calculator("no_such_package.calc:Calculator")
    raw = copy.deepcopy(BASE)
    raw["data"]["databases"][0]["baseline"] = "gfn2-xtb"
    raw["data"]["databases"][1]["task"] = "gfn1"  # same task, no baseline
    for database in raw["data"]["databases"]:
        database["path"] = str(sets / "train.extxyz")
    with pytest.raises(ConfigError, match="share task 'gfn1' but not its Δ-learning baseline"):
        load_config(raw=raw)
