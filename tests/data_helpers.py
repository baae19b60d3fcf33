"""Writers of tiny source files in each database's native layout, shared by the data tests."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import lmdb
import numpy as np
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.db.row import AtomsRow
from ase.units import Bohr, Hartree

from sevenomni.data.store import Record


def crystal(seed: int = 0, repeat: tuple[int, int, int] = (1, 1, 1)) -> Atoms:
    atoms = bulk("Si", "diamond", a=5.43).repeat(repeat)
    atoms.set_chemical_symbols(["Si", "C"] * (len(atoms) // 2))
    atoms.rattle(0.05, seed=seed)
    return atoms


def labelled(atoms: Atoms, seed: int = 0, stress: bool = True) -> Atoms:
    rng = np.random.default_rng(seed)
    atoms = atoms.copy()
    atoms.info["REF_energy"] = float(-5.0 * len(atoms) + rng.normal())
    atoms.arrays["REF_forces"] = rng.normal(size=(len(atoms), 3))
    if stress and atoms.pbc.any():
        atoms.info["REF_stress"] = rng.normal(size=6) * 0.01
    return atoms


def records(n: int, seed: int = 0, source: str = "mem") -> list[Record]:
    """Small valid records with every label, mixed sizes and periodicity."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        natoms = int(rng.integers(1, 6))
        periodic = bool(i % 2)
        out.append(Record(
            numbers=rng.integers(1, 10, natoms), positions=rng.random((natoms, 3)) * 3,
            cell=np.eye(3) * 4.0 if periodic else np.zeros((3, 3)), pbc=np.array([periodic] * 3),
            energy=float(rng.normal()), forces=rng.normal(size=(natoms, 3)),
            stress=rng.normal(size=(3, 3)) if periodic else None, source=source, index=i,
            config_type="train" if i % 3 else None, name=f"s{i}",
        ))
    return out


EXTXYZ_HEADER = 'Lattice="4 0 0 0 4 0 0 0 4" Properties=species:S:1:pos:R:3:REF_forces:R:3 pbc="T T T"'


def extxyz_frame(
    species=("H", "H"), positions=((0, 0, 0), (0.7, 0, 0)), forces=None, energy: str | None = "-1.0",
    stress: str | None = None, lattice: str = "4 0 0 0 4 0 0 0 4", pbc: str = "T T T",
) -> str:
    """One extxyz frame as text (so that invalid values can be written verbatim)."""
    forces = forces if forces is not None else [(0.1, 0.2, 0.3)] * len(species)
    info = [f'Lattice="{lattice}"', "Properties=species:S:1:pos:R:3:REF_forces:R:3", f'pbc="{pbc}"']
    if energy is not None:
        info.append(f"REF_energy={energy}")
    if stress is not None:
        info.append(f'REF_stress="{stress}"')
    lines = [str(len(species)), " ".join(info)]
    for s, p, f in zip(species, positions, forces):
        lines.append(f"{s} {' '.join(map(str, p))} {' '.join(map(str, f))}")
    return "\n".join(lines) + "\n"


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value))


def aselmdb_row(atoms: Atoms, energy=None, forces=None, stress=None, data=None, key_value_pairs=None) -> dict:
    """A row dict exactly as fairchem's LMDBDatabase._write builds it (before orjson)."""
    if energy is not None or forces is not None or stress is not None:
        atoms = atoms.copy()
        results = {k: v for k, v in (("energy", energy), ("forces", forces), ("stress", stress)) if v is not None}
        atoms.calc = SinglePointCalculator(atoms, **results)
    row = AtomsRow(atoms)
    row.ctime = 0.0
    row.user = "test"
    dct = {key: row[key] for key in row.__dict__ if key[0] != "_" and key not in row._keys and key != "id"}
    dct["mtime"] = 0.0
    if key_value_pairs:
        dct["key_value_pairs"] = key_value_pairs
    if data:
        dct["data"] = data
    dct["cell"] = np.asarray(dct["cell"])
    return dct


def write_aselmdb(path: Path, rows: list[dict], deleted: tuple[int, ...] = ()) -> Path:
    """Write rows with ids 1.. as zlib(JSON) under b"<id>", plus b"nextid" (and b"deleted_ids")."""
    env = lmdb.open(str(path), subdir=False, map_size=1 << 26, meminit=False, map_async=True)
    with env.begin(write=True) as txn:
        for i, row in enumerate(rows, start=1):
            if i in deleted:
                continue
            txn.put(str(i).encode("ascii"), zlib.compress(json.dumps(row, default=_jsonable).encode()))
        txn.put(b"nextid", zlib.compress(json.dumps(len(rows) + 1).encode()))
        if deleted:
            txn.put(b"deleted_ids", zlib.compress(json.dumps(list(deleted)).encode()))
    env.close()
    return path


def pymatgen_structure(atoms: Atoms) -> dict:
    """The pymatgen ``Structure.as_dict()`` layout MPtrj uses."""
    cell = atoms.cell.array
    return {
        "@module": "pymatgen.core.structure",
        "@class": "Structure",
        "charge": 0,
        "lattice": {"matrix": cell.tolist(), "pbc": [True, True, True], "a": float(np.linalg.norm(cell[0])),
                    "b": float(np.linalg.norm(cell[1])), "c": float(np.linalg.norm(cell[2])),
                    "alpha": 90.0, "beta": 90.0, "gamma": 90.0, "volume": float(atoms.get_volume())},
        "properties": {},
        "sites": [
            {"species": [{"element": s, "occu": 1}], "abc": f.tolist(), "xyz": p.tolist(),
             "properties": {"magmom": 0.0}, "label": s}
            for s, f, p in zip(atoms.get_chemical_symbols(), atoms.get_scaled_positions(), atoms.positions)
        ],
    }


def mptrj_frame(atoms: Atoms, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    energy = float(-5.0 * len(atoms) + rng.normal())
    return {
        "structure": pymatgen_structure(atoms),
        "uncorrected_total_energy": energy,
        "corrected_total_energy": energy - 1.0,
        "energy_per_atom": (energy - 1.0) / len(atoms),
        "ef_per_atom": -0.5,
        "e_per_atom_relaxed": -5.1,
        "ef_per_atom_relaxed": -0.6,
        "force": rng.normal(size=(len(atoms), 3)).tolist(),
        "stress": rng.normal(size=(3, 3)).tolist(),
        "magmom": None,
        "bandgap": 0.0,
        "mp_id": "mp-0",
    }


def write_mptrj(path: Path, materials: dict[str, dict[str, dict]]) -> Path:
    path.write_text(json.dumps(materials))
    return path


def write_spice(path: Path, molecules: dict[str, dict]) -> Path:
    """SPICE-2 layout: one group per molecule, positions in bohr, energies in hartree."""
    import h5py

    with h5py.File(path, "w") as handle:
        for name, mol in molecules.items():
            group = handle.create_group(name)
            group.create_dataset("atomic_numbers", data=np.asarray(mol["numbers"], dtype=np.int16))
            group.create_dataset("conformations", data=np.asarray(mol["positions"]) / Bohr).attrs["units"] = "bohr"
            group.create_dataset("dft_total_energy", data=np.asarray(mol["energy"]) / Hartree).attrs["units"] = "hartree"
            gradient = -np.asarray(mol["forces"]) / (Hartree / Bohr)
            group.create_dataset("dft_total_gradient", data=gradient).attrs["units"] = "hartree/bohr"
            group.create_dataset("formation_energy", data=np.asarray(mol["energy"]) / Hartree).attrs["units"] = "hartree"
            m, n = np.asarray(mol["positions"]).shape[:2]
            charges = np.zeros((m, n, 1))
            charges[:, 0, 0] = mol.get("charge", 0)
            group.create_dataset("mbis_charges", data=charges).attrs["units"] = "elementary_charge"
            group.create_dataset("smiles", data=[mol.get("smiles", "O").encode()], dtype=h5py.string_dtype())
            group.create_dataset("subset", data=[b"SPICE Test"], dtype=h5py.string_dtype())
    return path


def water_conformations(m: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    base = molecule("H2O").positions
    positions = base[None] + rng.normal(scale=0.02, size=(m, 3, 3))
    return {
        "numbers": [8, 1, 1], "positions": positions, "energy": -2080.0 + rng.normal(size=m),
        "forces": rng.normal(size=(m, 3, 3)),
    }
