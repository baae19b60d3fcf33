"""Tests for the data generator (sevenomni.experiments.data_generation, run by scripts/make_multifidelity_data.py)
and the committed recipes/data/tiny set."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from sevenomni.experiments.data_generation import (
    chunks,
    labelling,
    plan,
    presets,
    settings,
    structures,
    threads,
)
from sevenomni.experiments.data_generation.driver import generate

SCRIPT = REPO / "scripts" / "make_multifidelity_data.py"
TINY = REPO / "recipes" / "data" / "tiny"

SET_NAMES = (
    "crystal_gfn1",
    "molecule_gfn2",
    "molecule_gfn1_dbs",
    "test_crystal_gfn1",
    "test_molecule_gfn2",
    "test_molecule_gfn1",
)
CRYSTAL_SETS = ("crystal_gfn1", "test_crystal_gfn1")
MOLECULE_SETS = ("molecule_gfn2", "molecule_gfn1_dbs", "test_molecule_gfn2", "test_molecule_gfn1")


def _read(path):
    from ase.io import read

    if path.stat().st_size == 0:
        return []
    return read(path, index=":", format="extxyz")


def _read_all(out):
    return {name: _read(Path(out) / f"{name}.extxyz") for name in SET_NAMES}


def _micro_preset():
    """A handful of structures: 2 chemistries in unit cells, 4 + 1 molecules."""
    return dataclasses.replace(
        presets.PRESETS["tiny"],
        name="pytest-micro",
        crystals=("LiH_rocksalt", "CO2_dry_ice"),
        crystal_train=(1, 1, 2),
        crystal_test=(1, 1, 1),
        crystal_md_warmup=2,
        crystal_md_every=2,
        crystal_unit_cells=True,
        n_train_molecules=4,
        n_test_molecules=1,
        mol_frames_train=3,
        mol_frames_test=3,
        mol_frames_per_traj=2,
        mol_md_warmup=5,
        mol_md_every=5,
        dbs_fraction=0.2,
        dbs_min=2,
    )


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    pytest.importorskip("tblite")
    out = tmp_path_factory.mktemp("mfdata") / "a"
    manifest = generate(_micro_preset(), out, seed=7, workers=1, progress=False, log=lambda *_: None)
    return out, manifest


def test_files_and_labels(generated):
    out, manifest = generated
    assert (out / "manifest.json").exists()
    data = _read_all(out)
    for name in SET_NAMES:
        assert (out / f"{name}.extxyz").exists(), name
        assert len(data[name]) > 0, name
        assert manifest["sets"][name]["count"] == len(data[name])
        for atoms in data[name]:
            assert atoms.calc is None  # only REF_ keys, no calculator-style energy/forces
            assert np.isfinite(atoms.info["REF_energy"])
            f = atoms.arrays["REF_forces"]
            assert f.shape == (len(atoms), 3) and np.isfinite(f).all()
            assert np.linalg.norm(f, axis=1).max() <= manifest["force_filter"]["max_atom_force_norm_eV_per_A"]
            for key in ("config_type", "source", "method", "struct_id"):
                assert key in atoms.info, (name, key)
    for name in CRYSTAL_SETS:
        for atoms in data[name]:
            assert atoms.pbc.all() and atoms.cell.volume > 1.0
            s = np.asarray(atoms.info["REF_stress"], dtype=float)
            assert s.shape == (6,) and np.isfinite(s).all()
            assert atoms.info["method"] == "GFN1-xTB"
        assert {a.info["config_type"] for a in data[name]} <= {"rattle", "strain", "md"}
    for name in MOLECULE_SETS:
        for atoms in data[name]:
            assert not atoms.pbc.any()
            assert "REF_stress" not in atoms.info
            assert set(atoms.get_chemical_symbols()) <= {"H", "C", "N", "O"}
    assert {a.info["method"] for a in data["molecule_gfn2"]} == {"GFN2-xTB"}
    assert {a.info["method"] for a in data["molecule_gfn1_dbs"]} == {"GFN1-xTB"}
    tf = manifest["transfer_floor"]
    assert tf["n_structures"] == len(data["test_molecule_gfn2"])
    assert 0.0 < tf["force_mae_eV_per_A"] <= tf["force_rmse_eV_per_A"]


def test_labels_match_fresh_single_points(generated):
    """MD-frame labels are the raw calculator results (no MD constraint applied to them)."""
    out, _ = generated
    data = _read_all(out)
    picks = [a for a in data["molecule_gfn2"] if len(set(a.numbers)) > 1][:2]
    picks += [a for a in data["crystal_gfn1"] if a.info["config_type"] == "md" and len(set(a.numbers)) > 1][:2]
    picks += data["test_molecule_gfn1"][:1] + data["molecule_gfn1_dbs"][:1]
    assert len(picks) == 6
    with threads.single_threaded():
        for atoms in picks:
            e, f, s = labelling.singlepoint(atoms, atoms.info["method"], atoms.pbc.any(), 1e9)
            assert abs(e - atoms.info["REF_energy"]) < 1e-4
            np.testing.assert_allclose(f, atoms.arrays["REF_forces"], atol=2e-3)
            if s is not None:
                np.testing.assert_allclose(s, atoms.info["REF_stress"], atol=1e-5)


def test_held_out_molecules_and_paired_test_sets(generated):
    out, manifest = generated
    data = _read_all(out)
    train_src = {a.info["source"] for a in data["molecule_gfn2"]}
    test_src = {a.info["source"] for a in data["test_molecule_gfn2"]}
    assert test_src and not (train_src & test_src)
    assert set(manifest["molecules"]["test"]) == test_src
    assert not set(manifest["molecules"]["train"]) & set(manifest["molecules"]["test"])
    g2, g1 = data["test_molecule_gfn2"], data["test_molecule_gfn1"]
    assert len(g1) == len(g2)
    for a, b in zip(g2, g1):
        assert a.info["struct_id"] == b.info["struct_id"]
        assert (a.numbers == b.numbers).all()
        np.testing.assert_array_equal(a.positions, b.positions)
        assert a.info["method"] == "GFN2-xTB" and b.info["method"] == "GFN1-xTB"
        assert not np.allclose(a.arrays["REF_forces"], b.arrays["REF_forces"])
    # DBS: a subset of the D2 training structures, relabelled
    d2 = {a.info["struct_id"]: a for a in data["molecule_gfn2"]}
    assert len(data["molecule_gfn1_dbs"]) >= 2
    for a in data["molecule_gfn1_dbs"]:
        twin = d2[a.info["struct_id"]]
        np.testing.assert_array_equal(a.positions, twin.positions)
        assert a.info["source"] not in test_src


def test_same_seed_same_structures_and_resume(generated, tmp_path):
    out, manifest = generated
    preset = _micro_preset()
    quiet = dict(workers=1, progress=False, log=lambda *_: None)
    first = _read_all(out)

    # resume: everything is cached, nothing is recomputed, output unchanged
    m2 = generate(preset, out, seed=7, **quiet)
    assert m2["chunks"]["primary"]["computed"] == 0
    assert m2["chunks"]["primary"]["cached"] == manifest["chunks"]["primary"]["computed"]
    assert m2["chunks"]["dbs"]["computed"] == 0

    # a partially finished run (one chunk marker lost) recomputes exactly that chunk
    markers = sorted((out / ".cache").glob("molecule-*-train-*.json"))
    markers[0].unlink()
    m3 = generate(preset, out, seed=7, **quiet)
    assert m3["chunks"]["primary"]["computed"] == 1
    again = _read_all(out)
    for name in SET_NAMES:
        assert [a.info["struct_id"] for a in again[name]] == [a.info["struct_id"] for a in first[name]]
        for a, b in zip(again[name], first[name]):
            np.testing.assert_allclose(a.positions, b.positions, atol=1e-6)

    # same seed in a fresh directory: same structures
    fresh = tmp_path / "b"
    generate(preset, fresh, seed=7, **quiet)
    other = _read_all(fresh)
    for name in SET_NAMES:
        assert len(other[name]) == len(first[name]), name
        for a, b in zip(other[name], first[name]):
            assert (a.numbers == b.numbers).all()
            np.testing.assert_allclose(a.positions, b.positions, atol=1e-6)
            np.testing.assert_allclose(a.info["REF_energy"], b.info["REF_energy"], atol=1e-5)


def test_different_seed_changes_structures():
    pytest.importorskip("tblite")
    preset = _micro_preset()
    spec = plan.plan_primary(preset, 1, [], [])[0][0]
    with threads.single_threaded():
        a, _ = chunks.run_crystal_chunk(spec, Path("."))
        b, _ = chunks.run_crystal_chunk(dict(spec, seed=2), Path("."))
    assert not np.allclose(a[0].positions, b[0].positions)


def test_scf_failure_and_force_filter_are_skipped_not_fatal(monkeypatch):
    pytest.importorskip("tblite")
    with threads.single_threaded():
        _check_skips(monkeypatch)


def _check_skips(monkeypatch):
    preset = _micro_preset()
    crystal_specs, mol_specs = plan.plan_primary(preset, 0, ["H2O"], [])
    rattle = next(s for s in crystal_specs if s["config_type"] == "rattle")
    md = next(s for s in crystal_specs if s["config_type"] == "md")
    # a drastic force filter drops every structure, with a counted reason
    images, skipped = chunks.run_crystal_chunk(dict(rattle, force_filter=1e-6), Path("."))
    assert images == [] and skipped["force_filter"] == rattle["n"]
    images, skipped = chunks.run_molecule_chunk(dict(mol_specs[0], force_filter=1e-6), Path("."))
    assert images == [] and skipped["force_filter"] > 0
    # one SCF iteration never converges: structures and MD trajectories are skipped
    monkeypatch.setattr(labelling, "XTB_MAX_ITER", 1)  # looked up by make_xtb
    images, skipped = chunks.run_crystal_chunk(rattle, Path("."))
    assert images == [] and skipped["scf_not_converged"] == rattle["n"]
    images, skipped = chunks.run_crystal_chunk(md, Path("."))
    assert images == [] and skipped["md_scf_not_converged"] == settings.MAX_MD_RESTARTS + 1
    assert skipped["md_frames_missing"] == md["n"]


def test_molecule_split_is_seeded_and_disjoint():
    preset = presets.PRESETS["tiny"]
    tr1, te1 = structures.split_molecules(preset, 0)
    tr2, te2 = structures.split_molecules(preset, 0)
    assert (tr1, te1) == (tr2, te2)
    assert len(te1) == preset.n_test_molecules and len(tr1) == preset.n_train_molecules
    assert not set(tr1) & set(te1)
    eligible = set(structures.eligible_molecules())
    assert set(tr1) | set(te1) <= eligible
    # no radicals among the eligible molecules
    for name in eligible:
        assert sum(structures.build_molecule(name).numbers) % 2 == 0


def test_crystal_builders():
    from ase.neighborlist import neighbor_list

    assert len(structures.CRYSTALS) >= 8
    for name in structures.CRYSTALS:
        atoms = structures.build_crystal(name)
        assert atoms.pbc.all() and 2 <= len(atoms) <= 32, name
        d = neighbor_list("d", atoms, 3.2)
        assert d.min() > 0.9, name
    ice = structures.build_crystal("H2O_ice_Ic")
    i, j = neighbor_list("ij", ice, 1.1)
    o_idx = [k for k, s in enumerate(ice.get_chemical_symbols()) if s == "O"]
    for k in o_idx:  # ice rules: every O has exactly two covalent H
        assert sum(1 for a, b in zip(i, j) if a == k and ice[b].symbol == "H") == 2


def test_committed_tiny_manifest_matches_files():
    manifest_path = TINY / "manifest.json"
    assert manifest_path.exists(), "recipes/data/tiny is not generated"
    manifest = json.loads(manifest_path.read_text())
    assert set(SET_NAMES) <= set(manifest["sets"])
    for name, info in manifest["sets"].items():
        images = _read(TINY / info["file"])
        assert len(images) == info["count"], name
        elements = {s for a in images for s in a.get_chemical_symbols()}
        assert elements == set(info["elements"]), name
    sets = manifest["sets"]
    assert sets["test_molecule_gfn1"]["count"] == sets["test_molecule_gfn2"]["count"]
    assert not set(sets["test_molecule_gfn2"]["sources"]) & set(sets["molecule_gfn2"]["sources"])
    assert sets["crystal_gfn1"]["has_stress"] and not sets["molecule_gfn2"]["has_stress"]
    assert len(sets["crystal_gfn1"]["sources"]) >= 8
    assert sets["molecule_gfn1_dbs"]["count"] > 0
    total = sum(p.stat().st_size for p in TINY.iterdir() if p.is_file())
    assert total < 5 * 1024 * 1024


def test_contrast_makeup_differs_by_design():
    standard = presets.PRESETS["small"]
    second = presets.contrast(standard)
    assert second.name == "small_contrast"
    crystal_elements = {s for name in second.crystals
                        for s in structures.build_crystal(name, unit_cell=True).get_chemical_symbols()}
    assert not crystal_elements & {"H", "N"}
    assert sum(name in ("SiC_3C", "MgO_rocksalt") for name in second.crystals) == 2  # C and O, once each
    size = lambda p: sum(p.crystal_train) * len(p.crystals)  # noqa: E731
    assert abs(size(second) - size(standard)) <= 0.05 * size(standard)
    assert (second.n_train_molecules, second.mol_frames_train, second.dbs_fraction) == (
        standard.n_train_molecules, standard.mol_frames_train, standard.dbs_fraction)
    assert max(second.mol_T_range) < min(standard.mol_T_range) + 1  # cooler molecules
    factors = presets.CONTRAST_FACTORS
    for preset, sigma, temperature in ((standard, 1.0, 1.0),
                                       (second, factors["crystal_sigma_factor"], factors["crystal_T_factor"])):
        crystal_specs, molecule_specs = plan.plan_primary(preset, 0, ["CH4"], ["H2O"])
        for spec in crystal_specs:
            chemistry = structures.CRYSTALS[spec["source"]]
            assert spec["sigma"] == pytest.approx(chemistry.sigma * sigma)
            assert spec["md_T"] == pytest.approx(chemistry.md_T * temperature)
        assert all(spec["T_range"] == list(preset.mol_T_range) for spec in molecule_specs)


def test_crystal_chunk_rattles_with_the_planned_amplitude(monkeypatch, tmp_path):
    import numpy as np

    monkeypatch.setattr(chunks, "singlepoint", lambda atoms, *_: (0.0, np.zeros((len(atoms), 3)), np.zeros(6)))
    spec = {"kind": "crystal", "source": "Al_fcc", "split": "train", "config_type": "rattle", "part": 0, "n": 40,
            "seed": 0, "sigma": 0.2, "strain_max": 0.06, "md_T": 1200.0, "md_warmup": 2, "md_every": 2,
            "unit_cell": False, "force_filter": 20.0}
    images, _ = chunks.run_crystal_chunk(spec, tmp_path)
    base = structures.build_crystal("Al_fcc").positions
    displacement = np.concatenate([a.positions - base for a in images])
    assert displacement.std() == pytest.approx(0.2, rel=0.1)


def test_manifest_gives_each_sets_label_spread(generated):
    _, manifest = generated
    for name, info in manifest["sets"].items():
        if info["count"]:
            assert info["force_rms"] > 0 and info["energy_per_atom_std"] >= 0, name


@pytest.mark.parametrize("entry", [[str(SCRIPT)], ["-m", "sevenomni.experiments.data_generation.cli"]],
                         ids=["script", "module"])
def test_command_line_runs(entry):
    """scripts/make_multifidelity_data.py is a thin wrapper around the package's command line, which the ablation
    runs as a module (sevenomni.experiments.ablation.arms.ensure_data)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, *entry, "--help"], capture_output=True, text=True, cwd=REPO,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--preset {small,tiny}" in result.stdout and "--makeup {standard,contrast}" in result.stdout
