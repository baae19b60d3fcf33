"""MPtrj JSON (``MPtrj_2022.9_full.json``), streamed material by material.

Layout: ``{mp_id: {frame_id: frame}}`` with ``frame = {"structure": <pymatgen Structure dict>,
"uncorrected_total_energy", "corrected_total_energy", "energy_per_atom", "ef_per_atom",
"force" [N][3] (eV/Å), "stress" [3][3] (kBar, VASP sign), "magmom", "bandgap", "mp_id"}``.

Energy defaults to ``uncorrected_total_energy`` (SevenNet's and MACE-MP's choice; pass
``--energy-key corrected_total_energy`` for the MP2020-corrected one). Stress is converted to
eV/Å³ with ASE's sign: ``σ_ASE = -0.1 GPa · σ_kBar``.

Streaming uses ``ijson`` when it is installed (memory: one material at a time). Without it the
reader falls back to ``json.load`` of the whole file (documented fallback: memory ∝ file size).
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from ase.units import GPa

from sevenomni.core.keys import ENERGY, FORCES, STRESS
from sevenomni.data.readers.common import (
    LabelKeys,
    LabelLookup,
    RecordStream,
    SourceError,
    SourceFormat,
    guarded,
    validate_record,
)
from sevenomni.data.store import Record

KBAR_TO_EV_PER_A3_ASE_SIGN = -0.1 * GPa
DEFAULT_KEYS = ("uncorrected_total_energy", "force", "stress")

try:  # pragma: no cover - depends on the environment
    import ijson
except ImportError:  # pragma: no cover
    ijson = None


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def iter_materials(path: str | Path, stream: bool | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(material id, {frame id: frame}) pairs in file order; ``stream=False`` forces the fallback."""
    path = Path(path)
    use_ijson = (ijson is not None) if stream is None else stream
    if use_ijson and ijson is None:
        raise SourceError("streaming MPtrj needs the 'ijson' package (pip install ijson)")
    with _open(path) as handle:
        try:
            if use_ijson:
                yield from ijson.kvitems(handle, "", use_float=True)
            else:
                data = json.load(handle)
                if not isinstance(data, dict):
                    raise SourceError(f"{path}: MPtrj JSON must be an object of materials")
                yield from data.items()
        except (ValueError, getattr(ijson, "JSONError", ValueError)) as error:
            if isinstance(error, SourceError):
                raise
            raise SourceError(f"{path}: not valid MPtrj JSON: {error}") from error


def _species(site: dict[str, Any]) -> str:
    species = site["species"]
    if len(species) != 1 or abs(float(species[0].get("occu", 1.0)) - 1.0) > 1e-6:
        raise ValueError(f"site is not fully occupied by one element: {species}")
    return species[0]["element"]


def frame_to_record(frame: dict[str, Any], source: str, index: int, name: str, keys: LabelKeys) -> Record:
    structure = frame["structure"]
    lattice = structure["lattice"]
    sites = structure["sites"]
    labels = LabelLookup(source, index)
    energy_default, forces_default, stress_default = DEFAULT_KEYS
    energy = labels.find(ENERGY, keys.energy, energy_default, [("mptrj", frame)])
    forces = labels.find(FORCES, keys.forces, forces_default, [("mptrj", frame)])
    stress = labels.find(STRESS, keys.stress, stress_default, [("mptrj", frame)])
    if stress is not None:
        stress = np.asarray(stress, dtype=np.float64) * KBAR_TO_EV_PER_A3_ASE_SIGN
    return validate_record(
        source=source, index=index, species=[_species(site) for site in sites],
        positions=[site["xyz"] for site in sites], cell=lattice["matrix"],
        pbc=lattice.get("pbc", True), energy=energy, forces=forces,
        stress=stress, charge=structure.get("charge"), require_energy=keys.require_energy,
        min_distance=keys.min_distance,
        config_type=frame.get("mp_id"), name=name, origin=labels.origin,
    )


def read_mptrj(path: str | Path, keys: LabelKeys, stream: bool | None = None) -> RecordStream:
    """Frames in file order; record index counts frames across materials."""
    source = str(path)
    keys = keys.unset_generic()
    index = 0
    for material_id, frames in iter_materials(path, stream):
        if not isinstance(frames, dict):
            raise SourceError(f"{source}: material {material_id!r} is not an object of frames (not MPtrj layout)")
        for frame_id, frame in frames.items():
            yield guarded(source, index, partial(frame_to_record, frame, source, index, frame_id, keys))
            index += 1


def is_mptrj_json(path: Path) -> bool:
    """MPtrj JSON is keyed by material ids (``mp-…``); ASE's JSON database by row ids (``1``, ``ids``)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        head = handle.read(1 << 16).decode("utf-8", errors="replace")
    match = re.match(r'\s*\{\s*"([^"]*)"', head)
    first = match.group(1) if match else None
    return not (first is None or first.isdigit() or first in ("ids", "nextid"))


SOURCE_FORMAT = SourceFormat(
    name="mptrj",
    read=read_mptrj,
    summary="``MPtrj_2022.9_full.json`` layout (streamed with ijson)",
    suffixes=(".json", ".json.gz"),
    claims=is_mptrj_json,
)
