"""sevenomni.experiments.lambench: the normalized error, its aggregation, supercells, NVE drift, a full run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from analysis_helpers import tiny_model
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.io import read
from training_helpers import TINY

from sevenomni import SevenOmniCalculator, save_checkpoint
from sevenomni.experiments.lambench import accuracy, efficiency, instability, runner


def labels_as_predictions(structures, energy_offset=0.0):
    predictions = []
    for atoms in structures:
        prediction = {"energy": atoms.info["REF_energy"] + energy_offset * len(atoms), "forces": atoms.arrays["REF_forces"]}
        if "REF_stress" in atoms.info:
            prediction["stress"] = atoms.info["REF_stress"]
        predictions.append(prediction)
    return predictions


def test_perfect_model_scores_0_and_the_dummy_scores_1():
    crystals = read(TINY / "test_crystal_gfn1.extxyz", ":")
    # Another absolute energy reference (a constant per atom) is removed by the bias fit.
    perfect = accuracy.force_field_errors(crystals, labels_as_predictions(crystals, energy_offset=3.0))
    assert perfect["normalized"] == pytest.approx({"energy": 0.0, "forces": 0.0, "virial": 0.0}, abs=1e-9)
    counts = accuracy.composition_counts(crystals)
    labels = np.array([a.info["REF_energy"] for a in crystals])
    fitted = labels - accuracy.least_squares_residual(counts, labels)
    dummy = [{"energy": e, "forces": np.zeros((len(a), 3)), "stress": np.zeros(6)} for e, a in zip(fitted, crystals)]
    scored = accuracy.force_field_errors(crystals, dummy)
    assert scored["normalized"] == pytest.approx({"energy": 1.0, "forces": 1.0, "virial": 1.0})
    worse = [{**d, "forces": 10 * a.arrays["REF_forces"]} for d, a in zip(dummy, crystals)]
    assert accuracy.force_field_errors(crystals, worse)["normalized"]["forces"] == 1.0  # capped


def test_aggregation_is_a_geometric_mean_per_domain_then_a_weighted_mean():
    per_set = {
        "test_crystal_gfn1": {"normalized": {"energy": 0.2, "forces": 0.4, "virial": 1.0}},
        "test_molecule_gfn2": {"normalized": {"energy": 0.1, "forces": 0.5}},
        "test_molecule_gfn1": {"normalized": {"energy": 0.4, "forces": 0.5}},
    }
    metric = accuracy.force_field_metric(per_set)
    crystals = 0.45 * 0.2 + 0.45 * 0.4 + 0.1 * 1.0
    molecules = 0.5 * math.sqrt(0.1 * 0.4) + 0.5 * 0.5
    assert metric["domains"]["inorganic crystals"]["M"] == pytest.approx(crystals)
    assert metric["domains"]["small molecules"]["M"] == pytest.approx(molecules)
    assert metric["M_FF"] == pytest.approx((crystals + molecules) / 2)


@pytest.mark.parametrize("atoms", [bulk("Si", "diamond", a=5.43, cubic=True), bulk("Al", "fcc", a=4.05)])
def test_supercells_have_800_to_1000_atoms(atoms):
    big, replication = efficiency.replicate(atoms)
    assert 800 <= len(big) <= 1000 and len(big) == len(atoms) * np.prod(replication)


def test_instability_index_and_a_blow_up():
    assert instability.instability_index(5e-4) == 0.0
    assert instability.instability_index(5e-2) == pytest.approx(2.0)
    assert instability.instability_index(None) == instability.instability_index(60.0) == 5.0

    class Exploding(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            self.results = {"energy": float("nan"), "forces": np.zeros((len(atoms), 3))}

    failed = instability.nve_drift(bulk("Si", "diamond", a=5.43, cubic=True), Exploding(), steps=5)
    assert failed["phi"] is None and failed["index"] == 5.0 and "FloatingPointError" in failed["error"]
    calm = instability.nve_drift(
        bulk("Si", "diamond", a=5.43, cubic=True), SevenOmniCalculator(tiny_model(), task="gfn1", device="cpu"), steps=20
    )
    assert calm["error"] is None and calm["steps_done"] == 20 and 0.0 <= calm["index"] < 5.0


def test_a_full_run_writes_and_merges_results(tmp_path):
    save_checkpoint(tiny_model(dtype="float32"), tmp_path / "model.pt")
    out = tmp_path / "lambench"
    options = ["--repeats", "1", "--warmup", "0", "--md-steps", "10", "--out", str(out),
               "--efficiency-structures", "test_crystal_gfn1:Al_fcc", "--md-structures", "test_molecule_gfn2:C5H8"]
    runner.main(["--model", str(tmp_path / "model.pt"), "--name", "tiny", *options])
    runner.main(["--calculator", "sevenomni:SevenOmniCalculator", "--kwargs",
                 json.dumps({"model": str(tmp_path / "model.pt"), "task": "gfn2", "device": "cpu"}),
                 "--name", "gfn2 everywhere", *options])
    results = json.loads(out.with_suffix(".json").read_text())
    assert list(results["models"]) == ["tiny", "gfn2 everywhere"]
    tiny = results["models"]["tiny"]
    assert tiny["channels"] == {"test_crystal_gfn1": "gfn1", "test_molecule_gfn2": "gfn2", "test_molecule_gfn1": "gfn1"}
    assert 0.0 <= tiny["force_field"]["M_FF"] <= 1.0
    assert tiny["efficiency"]["structures"][0]["replication"] == [5, 5, 5]  # Al: 8 atoms × 125
    assert tiny["instability"]["structures"][0]["steps_done"] == 10
    # The same gfn2 channel on test_molecule_gfn2 in both runs: the same errors.
    same = [results["models"][n]["force_field"]["sets"]["test_molecule_gfn2"]["model_rmse"]["forces"] for n in results["models"]]
    assert same[0] == pytest.approx(same[1])
    table = out.with_suffix(".md").read_text()
    assert "| tiny |" in table and "| gfn2 everywhere |" in table and "| dummy |" in table
