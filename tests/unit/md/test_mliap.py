"""The ML-IAP "unified" adapter without LAMMPS: LAMMPS' pair lists (tests/mliap_helpers.py) in, the calculator's
energy, forces and per-atom energies out, on one rank and split over two; thin halos and ghost-neighbour flag 0
refused; the exported file carries every task and the channel can be chosen when it is loaded."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from conftest import make_model
from mliap_helpers import rank_view, run_ranks

import sevenomni.md.mliap as mliap_module
from sevenomni import SevenOmniCalculator, save_checkpoint
from sevenomni.cli import main
from sevenomni.core.baseline import BaselineSpec
from sevenomni.md.mliap import SHIFT_TASK_VARIABLE, TASK_VARIABLE, HaloError, SevenOmniMLIAP, export_mliap

HALO = 9.0  # Å: 2 layers × 4 Å + 1


@pytest.fixture(scope="module")
def model():
    return make_model()


def crystal() -> Atoms:
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 1, 1))
    atoms.set_chemical_symbols(["Si", "C"] * 8)
    atoms.rattle(0.05, seed=1)
    return atoms


def reference(model, atoms: Atoms, **channel):
    atoms = atoms.copy()
    atoms.calc = SevenOmniCalculator(model, **channel)
    return atoms.get_potential_energy(), atoms.get_forces(), atoms.get_potential_energies()


@pytest.mark.parametrize("ranks", [1, 2])
def test_matches_the_calculator_on_one_and_two_ranks(model, ranks):
    atoms = crystal()
    energy, forces, energies = reference(model, atoms, task="crystal")
    got = run_ranks(SevenOmniMLIAP(model, task="crystal"), atoms, ranks, HALO)
    assert got[0] == pytest.approx(energy, abs=1e-10)
    np.testing.assert_allclose(got[1], forces, atol=1e-10)
    np.testing.assert_allclose(got[2], energies, atol=1e-10)


@pytest.mark.parametrize("channel", [{"task": "molecule"}, {"task": "common", "shift_task": "molecule"}])
def test_other_channels_match_the_calculator(model, channel):
    atoms = crystal()
    energy, forces, _ = reference(model, atoms, **channel)
    got_energy, got_forces, _ = run_ranks(SevenOmniMLIAP(model, **channel), atoms, 2, HALO)
    assert got_energy == pytest.approx(energy, abs=1e-10)
    assert got_energy != pytest.approx(reference(model, atoms, task="crystal")[0], abs=1e-3)
    np.testing.assert_allclose(got_forces, forces, atol=1e-10)


def test_slab_with_vacuum_and_molecule_in_a_box_pass_and_match(model):
    slab = fcc111("Al", (2, 2, 3), vacuum=6.0, orthogonal=True)
    slab.set_chemical_symbols(["Si", "C"] * 6)
    slab.rattle(0.05, seed=3)
    slab.pbc = [True, True, False]
    ethanol = molecule("CH3CH2OH")
    ethanol.set_cell([14.0, 15.0, 16.0])
    ethanol.center()
    ethanol.pbc = True
    for atoms in (slab, ethanol):
        energy, forces, _ = reference(model, atoms, task="molecule")
        got_energy, got_forces, _ = run_ranks(SevenOmniMLIAP(model, task="molecule"), atoms, 1, HALO)
        assert got_energy == pytest.approx(energy, abs=1e-10)
        np.testing.assert_allclose(got_forces, forces, atol=1e-10)


def test_a_thin_halo_is_refused_and_would_be_wrong(model, monkeypatch):
    atoms = crystal()
    unified = SevenOmniMLIAP(model, task="crystal")
    with pytest.raises(HaloError, match=r"halo is too thin.*comm_modify cutoff 10"):
        run_ranks(unified, atoms, 2, halo=4.5)
    monkeypatch.setattr(mliap_module, "check_halo", lambda *args: None)
    wrong_energy, _, _ = run_ranks(unified, atoms, 2, halo=4.5)
    assert abs(wrong_energy - reference(model, atoms, task="crystal")[0]) > 1e-9


def test_ghost_neighbour_flag_0_is_refused(model):
    with pytest.raises(HaloError, match=r"no neighbour lists.*flag of `pair_style mliap unified` is 0"):
        run_ranks(SevenOmniMLIAP(model, task="crystal"), crystal(), 2, HALO, ghost_neighbours=False)


def test_null_type_is_refused(model):
    unified = SevenOmniMLIAP(model, task="crystal")
    data, _ = rank_view(crystal(), unified.element_types, [0, 0, 0], [11, 6, 6], HALO, unified.cutoff)
    data.elems[0] = -1
    with pytest.raises(ValueError, match="NULL in pair_coeff"):
        unified.compute_forces(data)


def test_what_lammps_reads(model):
    unified = SevenOmniMLIAP(model, task="crystal")
    assert unified.element_types == ["H", "C", "N", "O", "Si"]
    assert 2 * unified.rcutfac == model.cutoff == 4.0
    assert (unified.ndescriptors, unified.nparams) == (1, 1)
    assert unified.ghost_cutoff == 8.0


def test_exported_file_carries_every_task_and_the_channel_is_chosen_when_loaded(model, tmp_path, monkeypatch):
    path = tmp_path / "model.mliap.pkl"
    export_mliap(model, path, task="crystal", device="cpu")
    atoms = crystal()
    monkeypatch.delenv(TASK_VARIABLE, raising=False)
    with open(path, "rb") as handle:
        default = pickle.load(handle)
    assert default.channel == "crystal" and default.model.tasks.as_list() == ["crystal", "molecule"]
    assert run_ranks(default, atoms, 1, HALO)[0] == pytest.approx(reference(model, atoms, task="crystal")[0])
    monkeypatch.setenv(TASK_VARIABLE, "common")
    monkeypatch.setenv(SHIFT_TASK_VARIABLE, "molecule")
    with open(path, "rb") as handle:
        common = pickle.load(handle)
    assert common.channel == "common (shifts of molecule)"
    expected = reference(model, atoms, task="common", shift_task="molecule")[0]
    assert run_ranks(common, atoms, 1, HALO)[0] == pytest.approx(expected, abs=1e-10)
    monkeypatch.setenv(TASK_VARIABLE, "pbe")
    monkeypatch.delenv(SHIFT_TASK_VARIABLE)
    with open(path, "rb") as handle, pytest.raises(ValueError, match="SEVENOMNI_TASK='pbe'.*crystal"):
        pickle.load(handle)


def test_the_channel_follows_lammps_shell_putenv(model, tmp_path, monkeypatch):
    """`shell putenv` changes the C environment only; the adapter reads that, not Python's copy of it."""
    path = tmp_path / "model.mliap.pkl"
    export_mliap(model, path, task="crystal", device="cpu")
    monkeypatch.delenv(TASK_VARIABLE, raising=False)
    os.putenv(TASK_VARIABLE, "molecule")
    try:
        assert TASK_VARIABLE not in os.environ
        with open(path, "rb") as handle:
            assert pickle.load(handle).channel == "molecule"
    finally:
        os.unsetenv(TASK_VARIABLE)


def test_export_errors(model, tmp_path):
    with pytest.raises(ValueError, match=r"torch.load.*\.pkl"):
        export_mliap(model, tmp_path / "model.pt", task="crystal")
    with pytest.raises(ValueError, match="several tasks"):
        export_mliap(model, tmp_path / "model.pkl")
    delta = make_model()
    delta.set_baseline("crystal", BaselineSpec(calculator="ase.calculators.lj:LennardJones"))
    with pytest.raises(ValueError, match="baseline.*sevenomni lammps"):
        export_mliap(delta, tmp_path / "model.pkl", task="crystal")
    assert not list(tmp_path.iterdir())


def test_export_command(model, tmp_path, capsys):
    source, out = tmp_path / "model.pt", tmp_path / "model.mliap.pkl"
    save_checkpoint(model, source)
    assert main(["export", str(source), "--format", "mliap", "--task", "molecule", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "default channel molecule" in printed and "comm_modify cutoff 10" in printed
    with open(out, "rb") as handle:
        assert pickle.load(handle).channel == "molecule"
    assert main(["export", str(source), "--format", "mliap", "--task", "dft", "--out", str(out)]) == 2
    assert "dft" in capsys.readouterr().err
