"""Every reader on a tiny file in its native layout, and every rejection reason."""

from __future__ import annotations

import json

import ase.db
import ase.io
import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import GPa
from data_helpers import (
    aselmdb_row,
    crystal,
    extxyz_frame,
    labelled,
    mptrj_frame,
    water_conformations,
    write_aselmdb,
    write_mptrj,
    write_spice,
)

from sevenomni.data.readers import (
    InvalidRecordError,
    LabelKeys,
    Rejected,
    SourceError,
    detect_format,
    expand_sources,
    read_source,
    validate_record,
)
from sevenomni.data.readers import mptrj as mptrj_module
from sevenomni.data.store import Record

KEYS = LabelKeys()


def read_all(path, fmt=None, keys=KEYS):
    return list(read_source(path, fmt or detect_format(path), keys))


def voigt_to_3x3(v):
    xx, yy, zz, yz, xz, xy = v
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


# -- extxyz / ASE formats -------------------------------------------------------------------


def test_extxyz_labels_by_key(tmp_path):
    frames = [labelled(crystal(i), seed=i) for i in range(3)] + [labelled(molecule("CH4"), seed=9)]
    frames[0].info["config_type"] = "bulk"
    path = tmp_path / "a.extxyz"
    ase.io.write(path, frames)
    out = read_all(path)
    assert all(isinstance(r, Record) for r in out) and [r.index for r in out] == [0, 1, 2, 3]
    for atoms, record in zip(frames, out):
        np.testing.assert_allclose(record.positions, atoms.positions, atol=1e-7)
        np.testing.assert_array_equal(record.numbers, atoms.numbers)
        assert record.energy == pytest.approx(atoms.info["REF_energy"])
        np.testing.assert_allclose(record.forces, atoms.arrays["REF_forces"], atol=1e-7)
        assert record.source == str(path)
    np.testing.assert_allclose(out[0].stress, voigt_to_3x3(frames[0].info["REF_stress"]), atol=1e-7)
    assert out[3].stress is None and not out[3].pbc.any()
    assert out[0].config_type == "bulk" and out[0].origin == {
        "energy": "info:REF_energy", "forces": "arrays:REF_forces", "stress": "info:REF_stress"}


def test_extxyz_calculator_fallback_and_custom_keys(tmp_path):
    atoms = crystal(1)
    atoms.calc = SinglePointCalculator(atoms, energy=-3.0, forces=np.ones((len(atoms), 3)),
                                       stress=np.arange(6.0))
    atoms.info["dft_E"] = -7.0
    path = tmp_path / "calc.xyz"
    ase.io.write(path, atoms, format="extxyz")
    (record,) = read_all(path)
    assert record.energy == -3.0 and record.origin["energy"] == "calculator:energy"
    np.testing.assert_allclose(record.stress, voigt_to_3x3(np.arange(6.0)))
    (record,) = read_all(path, keys=LabelKeys(energy="dft_E"))
    assert record.energy == -7.0


def test_ase_database_and_trajectory(tmp_path):
    atoms = [labelled(crystal(i), seed=i) for i in range(2)]
    db_path = tmp_path / "x.db"
    with ase.db.connect(db_path) as db:
        for a in atoms:
            db.write(a.copy(), REF_energy=a.info["REF_energy"], data={"REF_forces": a.arrays["REF_forces"]})
    out = read_all(db_path)
    assert [r.index for r in out] == [1, 2]  # ASE row ids
    assert out[1].energy == pytest.approx(atoms[1].info["REF_energy"])
    np.testing.assert_allclose(out[1].forces, atoms[1].arrays["REF_forces"])

    traj = tmp_path / "x.traj"
    with ase.io.Trajectory(traj, "w") as writer:
        for i, a in enumerate(atoms):
            a = a.copy()
            del a.info["REF_energy"]
            a.calc = SinglePointCalculator(a, energy=float(i), forces=np.zeros((len(a), 3)))
            writer.write(a)
    out = read_all(traj)
    assert [r.energy for r in out] == [0.0, 1.0] and out[0].origin["energy"] == "calculator:energy"


@pytest.mark.parametrize("label", ["energy", "forces", "stress"])
def test_extxyz_explicit_key_never_falls_back(tmp_path, label):
    """`energy=` in extxyz is ASE's calculator: a named key that is absent is an error, not a fallback."""
    atoms = crystal(1)
    atoms.calc = SinglePointCalculator(atoms, energy=-3.0, forces=np.ones((len(atoms), 3)), stress=np.arange(6.0))
    path = tmp_path / "calc.xyz"
    ase.io.write(path, [atoms, atoms], format="extxyz")
    out = read_all(path, keys=LabelKeys(**{label: f"DFT_{label}"}))
    assert [r.reason for r in out] == ["missing_label", "missing_label"]
    assert str(out[1].error()).startswith(f"{path}: record 1: no {label} under the key 'DFT_{label}'")
    (record,) = read_all(path, keys=LabelKeys(**{label: label}))[:1]  # the calculator's own name is a key too
    assert record.origin[label] == f"calculator:{label}"


def test_ase_database_explicit_key(tmp_path):
    atoms = labelled(crystal(0))
    with ase.db.connect(tmp_path / "x.db") as db:
        db.write(atoms, REF_energy=atoms.info["REF_energy"], dft_E=-2.0)
    (record,) = read_all(tmp_path / "x.db", keys=LabelKeys(energy="dft_E"))
    assert record.energy == -2.0 and record.origin["energy"] == "info:dft_E"
    (bad,) = read_all(tmp_path / "x.db", keys=LabelKeys(forces="dft_F"))
    assert bad.reason == "missing_label" and "record 1: no forces under the key 'dft_F'" in str(bad.error())


# -- every rejection reason (through extxyz, the most common source) -------------------------

BAD_FRAMES = {
    "nan_position": (dict(positions=((0, 0, 0), (0.7, "nan", 0))), "non_finite"),
    "inf_energy": (dict(energy="inf"), "non_finite"),
    "nan_force": (dict(forces=((0, 0, 0), (0, 0, "nan"))), "non_finite"),
    "nan_stress": (dict(stress="1 2 3 4 5 nan"), "non_finite"),
    "stress_shape": (dict(stress="1 2 3 4"), "stress_shape"),
    "zero_volume": (dict(lattice="4 0 0 8 0 0 0 0 4"), "zero_volume"),
    "missing_energy": (dict(energy=None), "missing_energy"),
    "unknown_element": (dict(species=("H", "Xq")), "unknown_element"),
    "coincident_atoms": (dict(positions=((1, 1, 1), (1, 1, 1))), "close_atoms"),
    "atom_on_an_image": (dict(positions=((0, 0, 0), (3.95, 0, 0))), "close_atoms"),  # 0.05 Å through the cell
}


@pytest.mark.parametrize("case", list(BAD_FRAMES))
def test_extxyz_rejections_name_file_and_index(tmp_path, case):
    kwargs, reason = BAD_FRAMES[case]
    path = tmp_path / "bad.extxyz"
    path.write_text(extxyz_frame() + extxyz_frame(**kwargs) + extxyz_frame())
    out = read_all(path)
    assert isinstance(out[0], Record) and isinstance(out[2], Record)
    bad = out[1]
    assert isinstance(bad, Rejected) and bad.reason == reason and bad.index == 1
    assert str(path) in str(bad.error()) and "record 1" in str(bad.error())


def test_minimum_distance_names_the_pair():
    base = dict(source="f.xyz", index=3, species=["H", "H", "O"], energy=0.0)
    with pytest.raises(InvalidRecordError, match=r"f.xyz: record 3: atoms 0 and 2 are 0.0000 Å apart "
                                                 r"\(minimum 0.1 Å\) \[close_atoms\]"):
        validate_record(**base, positions=[[0, 0, 0], [0.7, 0, 0], [0, 0, 0]])
    with pytest.raises(InvalidRecordError, match=r"atoms 0 and 1 are 0.0500 Å apart through the periodic "
                                                 r"image \[-1, 0, 0\]"):
        validate_record(**base, positions=[[0, 0, 0], [3.95, 0, 0], [2, 2, 2]], cell=np.eye(3) * 4, pbc=True)
    with pytest.raises(InvalidRecordError, match=r"atom 0 is 0.0500 Å from its own periodic image"):
        validate_record(**{**base, "species": ["H"]}, positions=[[0, 0, 0]], cell=np.diag([0.05, 4, 4]), pbc=True)
    with pytest.raises(InvalidRecordError, match="minimum 1.0 Å"):
        validate_record(**base, positions=[[0, 0, 0], [0.7, 0, 0], [3, 0, 0]], min_distance=1.0)
    assert validate_record(**base, positions=np.zeros((3, 3)), min_distance=0.0).numbers.tolist() == [1, 1, 8]


def test_minimum_distance_agrees_with_a_brute_force_search():
    """Random periodic, slab and molecular structures, small (all pairs compared) and larger (a cell
    list), with the limit just above or just below the closest pair (periodic images included)."""
    rng = np.random.default_rng(0)
    for trial in range(72):
        n = int(rng.integers(1, 12) if trial % 2 else rng.integers(33, 45))
        cell = np.diag(rng.uniform(1.5, 6.0, 3)) + rng.uniform(-0.5, 0.5, (3, 3))
        pbc = [np.ones(3, bool), np.array([True, True, False]), np.zeros(3, bool)][trial % 3]
        positions = rng.random((n, 3)) @ cell
        shifts = np.array([[a, b, c] for a in range(-3, 4) for b in range(-3, 4) for c in range(-3, 4)])
        shifts = shifts[(shifts[:, ~pbc] == 0).all(axis=1)]
        vectors = positions[None, :, None] - positions[:, None, None] + (shifts @ cell)[None, None]
        distances = np.linalg.norm(vectors, axis=-1)
        distances[np.arange(n), np.arange(n), (shifts == 0).all(axis=1).argmax()] = np.inf  # an atom itself
        closest = distances.min()
        base = dict(source="r", index=trial, species=[1] * n, positions=positions, cell=cell, pbc=pbc, energy=0.0)
        if not np.isfinite(closest):  # one atom, no periodicity
            validate_record(**base, min_distance=1.0)
        elif (trial // 6) % 2:
            with pytest.raises(InvalidRecordError, match=f"{closest:.4f} Å"):
                validate_record(**base, min_distance=1.01 * closest)
        else:
            validate_record(**base, min_distance=0.99 * closest)


def test_forces_shape_rejected():
    with pytest.raises(InvalidRecordError) as error:
        validate_record(source="f.xyz", index=7, species=["H", "H"], positions=np.zeros((2, 3)) + [[0, 0, 0], [1, 0, 0]],
                        energy=1.0, forces=np.zeros((3, 3)))
    assert error.value.reason == "forces_shape" and "f.xyz: record 7" in str(error.value)
    with pytest.raises(InvalidRecordError, match="forces_shape"):
        validate_record(source="f", index=0, species=[1], positions=[[0, 0, 0]], energy=1.0, forces=[1.0, 2.0, 3.0])


def test_validate_accepts_3x3_and_voigt_stress_equally():
    base = dict(source="s", index=0, species=[14], positions=[[0, 0, 0]], cell=np.eye(3) * 3, pbc=True, energy=0.0)
    voigt = validate_record(**base, stress=[1, 2, 3, 4, 5, 6]).stress
    full = validate_record(**base, stress=voigt).stress
    np.testing.assert_array_equal(voigt, full)
    assert voigt[1, 2] == 4 and voigt[0, 2] == 5 and voigt[0, 1] == 6
    assert validate_record(**{**base, "energy": None}, require_energy=False).energy is None


def test_extxyz_broken_layout_is_a_source_error(tmp_path):
    path = tmp_path / "broken.extxyz"
    path.write_text(extxyz_frame() + "two\nnot a frame\n")
    with pytest.raises(SourceError, match=r"broken.extxyz: record 1"):
        read_all(path)
    path.write_text(extxyz_frame() + "5\ncomment\nH 0 0 0\n")
    with pytest.raises(SourceError, match="ends inside the frame"):
        read_all(path)


# -- .aselmdb (OMat24 / OMol25 / OC20) ------------------------------------------------------


def test_aselmdb_exact_layout(tmp_path):
    atoms = [crystal(i) for i in range(4)]
    rows = [
        aselmdb_row(a, energy=-float(i), forces=np.full((len(a), 3), 0.5 * i), stress=np.arange(6) * 0.1)
        for i, a in enumerate(atoms)
    ]
    mol = molecule("H2O")
    rows.append(aselmdb_row(mol, energy=-14.0, forces=np.zeros((3, 3)), data={"charge": -1, "spin": 2}))
    path = write_aselmdb(tmp_path / "omat.aselmdb", rows, deleted=(3,))
    out = read_all(path)
    assert [r.index for r in out] == [1, 2, 4, 5]
    np.testing.assert_allclose(out[1].positions, atoms[1].positions)
    assert out[1].energy == -1.0 and out[1].origin["energy"] == "calculator:energy"
    np.testing.assert_allclose(out[2].stress, voigt_to_3x3(np.arange(6) * 0.1))
    assert out[3].charge == -1.0 and out[3].spin == 2.0 and not out[3].pbc.any()
    assert out[0].name is not None  # ASE unique_id

    # a directory of .aselmdb files expands to its files, in order
    write_aselmdb(tmp_path / "b.aselmdb", rows[:1])
    assert [p.name for p, f in expand_sources([tmp_path])] == ["b.aselmdb", "omat.aselmdb"]


def test_aselmdb_explicit_key_never_falls_back(tmp_path):
    row = aselmdb_row(crystal(0), energy=-1.0, forces=np.zeros((2, 3)), data={"dft_E": -4.0})
    path = write_aselmdb(tmp_path / "k.aselmdb", [row])
    (record,) = read_all(path, keys=LabelKeys(energy="dft_E"))
    assert record.energy == -4.0 and record.origin == {"energy": "data:dft_E", "forces": "calculator:forces"}
    (record,) = read_all(path, keys=LabelKeys(energy="REF_energy"))  # the generic name: the native label
    assert record.energy == -1.0 and record.origin["energy"] == "calculator:energy"
    (bad,) = read_all(path, keys=LabelKeys(energy="omat_energy"))
    assert bad.reason == "missing_label" and "k.aselmdb: record 1: no energy under the key 'omat_energy'" in str(bad.error())


def test_native_formats_check_the_minimum_distance(tmp_path):
    stacked = crystal(0)
    stacked.positions[1] = stacked.positions[0] + stacked.cell[2]  # on a periodic image of atom 0
    lmdb_path = write_aselmdb(tmp_path / "c.aselmdb", [aselmdb_row(stacked, energy=-1.0)])
    mptrj_path = write_mptrj(tmp_path / "c.json", {"mp-1": {"a": mptrj_frame(stacked)}})
    for path in (lmdb_path, mptrj_path):
        (bad,) = read_all(path)
        assert bad.reason == "close_atoms" and "atoms 0 and 1 are 0.0000 Å apart through the periodic image" in bad.message
        (record,) = read_all(path, keys=LabelKeys(min_distance=0.0))
        assert isinstance(record, Record)


def test_aselmdb_rejections(tmp_path):
    good = aselmdb_row(crystal(0), energy=-1.0)
    nan_energy = dict(good, energy=None)  # orjson writes NaN as null
    bad_forces = dict(good, forces=[[0.0, 0.0]] * 2)
    path = write_aselmdb(tmp_path / "bad.aselmdb", [good, nan_energy, bad_forces])
    out = read_all(path)
    assert isinstance(out[0], Record)
    assert (out[1].index, out[1].reason) == (2, "missing_energy")
    assert (out[2].index, out[2].reason) == (3, "forces_shape")


# -- MPtrj JSON -----------------------------------------------------------------------------


def mptrj_file(tmp_path, name="MPtrj_2022.9_full.json"):
    materials = {
        "mp-1": {"mp-1-0-0": mptrj_frame(crystal(0), 0), "mp-1-0-1": mptrj_frame(crystal(1), 1)},
        "mp-22": {"mp-22-3-0": mptrj_frame(crystal(2, (1, 1, 2)), 2)},
    }
    return write_mptrj(tmp_path / name, materials), materials


@pytest.mark.parametrize("stream", [True, False], ids=["ijson", "json-fallback"])
def test_mptrj_layout_and_units(tmp_path, monkeypatch, stream):
    if stream:
        pytest.importorskip("ijson")
    else:
        monkeypatch.setattr(mptrj_module, "ijson", None)
    path, materials = mptrj_file(tmp_path)
    assert detect_format(path) == "mptrj"
    out = read_all(path)
    frames = [f for m in materials.values() for f in m.values()]
    assert [r.name for r in out] == ["mp-1-0-0", "mp-1-0-1", "mp-22-3-0"] and [r.index for r in out] == [0, 1, 2]
    for record, frame in zip(out, frames):
        assert record.energy == frame["uncorrected_total_energy"]
        np.testing.assert_allclose(record.forces, frame["force"])
        np.testing.assert_allclose(record.stress, -0.1 * GPa * np.asarray(frame["stress"]))
        np.testing.assert_allclose(record.positions, [s["xyz"] for s in frame["structure"]["sites"]])
        np.testing.assert_allclose(record.cell, frame["structure"]["lattice"]["matrix"])
        assert record.pbc.all()
    (first, *_) = read_all(path, keys=LabelKeys(energy="corrected_total_energy"))
    assert first.energy == frames[0]["corrected_total_energy"]


def test_mptrj_explicit_key_never_falls_back(tmp_path):
    path, _ = mptrj_file(tmp_path)
    out = read_all(path, keys=LabelKeys(energy="total_energy"))
    assert [r.reason for r in out] == ["missing_label"] * 3
    assert "record 2: no energy under the key 'total_energy'" in str(out[2].error())
    assert read_all(path)[0].origin == {
        "energy": "mptrj:uncorrected_total_energy", "forces": "mptrj:force", "stress": "mptrj:stress"}


def test_mptrj_rejections(tmp_path):
    bad_stress = mptrj_frame(crystal(0))
    bad_stress["stress"] = [1.0, 2.0]
    unknown = mptrj_frame(crystal(1))
    unknown["structure"]["sites"][0]["species"][0]["element"] = "Qq"
    nan_force = json.loads(json.dumps(mptrj_frame(crystal(2))))
    nan_force["force"][0][0] = None
    path = write_mptrj(tmp_path / "m.json", {"mp-9": {"a": mptrj_frame(crystal(3)), "b": bad_stress},
                                            "mp-8": {"c": unknown, "d": nan_force}})
    out = read_all(path)
    assert isinstance(out[0], Record)
    assert [(r.index, r.reason) for r in out[1:]] == [(1, "stress_shape"), (2, "unknown_element"), (3, "non_finite")]


def test_mptrj_wrong_layout(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"mp-1": [1, 2, 3]}))
    with pytest.raises(SourceError, match="not an object of frames"):
        read_all(path)


# -- SPICE HDF5 -----------------------------------------------------------------------------


def test_spice_units_and_gradients(tmp_path):
    pytest.importorskip("h5py")
    water = water_conformations(3)
    ion = water_conformations(2, seed=1)
    ion["charge"] = -1
    path = write_spice(tmp_path / "SPICE-2.0.1.hdf5", {"water": water, "hydroxide-ish": ion})
    out = read_all(path)
    assert len(out) == 5 and all(isinstance(r, Record) for r in out)
    by_name = {r.name: r for r in out}
    record = by_name["water/2"]
    np.testing.assert_allclose(record.positions, water["positions"][2], atol=1e-10)
    assert record.energy == pytest.approx(water["energy"][2], abs=1e-8)
    np.testing.assert_allclose(record.forces, water["forces"][2], atol=1e-10)
    assert not record.pbc.any() and record.stress is None and record.charge == 0.0
    assert by_name["hydroxide-ish/1"].charge == -1.0 and record.config_type == "SPICE Test"


def test_spice_rejections(tmp_path):
    pytest.importorskip("h5py")
    water = water_conformations(3)
    water["forces"][1, 0, 0] = np.nan
    water["energy"][2] = np.inf
    out = read_all(write_spice(tmp_path / "s.h5", {"w": water}))
    assert isinstance(out[0], Record)
    assert [(r.index, r.reason) for r in out[1:]] == [(1, "non_finite"), (2, "non_finite")]
    assert "s.h5: record 2" in str(out[2].error())


def test_spice_explicit_key_never_falls_back(tmp_path):
    pytest.importorskip("h5py")
    path = write_spice(tmp_path / "s.h5", {"w": water_conformations(2), "v": water_conformations(1)})
    out = read_all(path, keys=LabelKeys(energy="formation_energy"))
    assert all(isinstance(r, Record) for r in out) and out[0].origin["energy"] == "spice:formation_energy"
    out = read_all(path, keys=LabelKeys(forces="dft_total_force"))
    assert [(r.index, r.reason) for r in out] == [(0, "missing_label"), (1, "missing_label"), (2, "missing_label")]
    assert "s.h5: record 1: no forces under the key 'dft_total_force'" in str(out[1].error())


def test_unknown_sources(tmp_path):
    with pytest.raises(FileNotFoundError):
        expand_sources([tmp_path / "nope.xyz"])
    (tmp_path / "d").mkdir()
    with pytest.raises(SourceError, match="neither a sevenomni store"):
        expand_sources([tmp_path / "d"])
