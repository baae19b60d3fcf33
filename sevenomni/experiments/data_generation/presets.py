"""Presets (how many structures of which kind a data set holds) and the contrast make-up, a second
data set of the same size class built to differ from the standard one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sevenomni.experiments.data_generation.settings import DEFAULT_FORCE_FILTER


@dataclass(frozen=True)
class Preset:
    name: str
    # crystals
    crystals: tuple[str, ...]
    crystal_train: tuple[int, int, int]  # (n_rattle, n_strain, n_md) per chemistry
    crystal_test: tuple[int, int, int]
    crystal_md_warmup: int = 10
    crystal_md_every: int = 5
    crystal_unit_cells: bool = False  # True: no supercell (cheap; for tests)
    crystal_chunk_size: int = 20  # max structures per cached crystal chunk
    crystal_sigma_factor: float = 1.0  # multiplies every chemistry's rattle amplitude
    crystal_strain_factor: float = 1.0  # multiplies every chemistry's maximum strain
    crystal_T_factor: float = 1.0  # multiplies every chemistry's MD temperature
    # molecules
    n_train_molecules: int | None = None  # None: every eligible molecule not held out
    n_test_molecules: int = 3
    train_molecules: tuple[str, ...] | None = None  # explicit lists override the seeded choice
    test_molecules: tuple[str, ...] | None = None
    max_heavy_atoms: int = 10
    mol_frames_train: int = 10  # frames per training molecule
    mol_frames_test: int = 10  # frames per test molecule
    mol_frames_per_traj: int = 5
    mol_md_warmup: int = 40
    mol_md_every: int = 20
    mol_T_range: tuple[float, float] = (300.0, 1000.0)
    # DBS
    dbs_fraction: float = 0.05
    dbs_min: int = 10
    # filter
    force_filter: float = DEFAULT_FORCE_FILTER
    # optional DFT tier
    dft_n_structures: int = 4
    dft_basis: str = "def2-SVP"


ALL_CRYSTALS: tuple[str, ...] = (
    "C_diamond",
    "C_graphite",
    "Si_diamond",
    "SiC_3C",
    "SiO2_alpha_quartz",
    "MgO_rocksalt",
    "LiF_rocksalt",
    "LiH_rocksalt",
    "Al_fcc",
    "H2O_ice_Ic",
    "CO2_dry_ice",
    "urea",
)

PRESETS: dict[str, Preset] = {
    # 156 crystal, 36 test crystal, 150 molecule, 10 DBS, 30 + 30 test molecule
    "tiny": Preset(
        name="tiny",
        crystals=ALL_CRYSTALS,
        crystal_train=(5, 4, 4),
        crystal_test=(1, 1, 1),
        n_train_molecules=30,
        n_test_molecules=5,
        mol_frames_train=5,
        mol_frames_test=6,
        mol_frames_per_traj=3,
        dbs_fraction=0.05,
        dbs_min=10,
    ),
    # ~2000 crystal, ~200 test crystal, ~2000 molecule, 1 % DBS (>= 20), ~200 + 200 test molecule
    "small": Preset(
        name="small",
        crystals=ALL_CRYSTALS,
        crystal_train=(60, 50, 57),
        crystal_test=(6, 5, 6),
        n_train_molecules=None,
        n_test_molecules=6,
        mol_frames_train=36,
        mol_frames_test=34,
        mol_frames_per_traj=6,
        dbs_fraction=0.01,
        dbs_min=20,
        dft_n_structures=12,
    ),
}


# The "contrast" make-up: a second data set built to differ from the standard one. Its crystals
# are hotter and more distorted (rattles x4, strains x2, MD temperatures x3) and its molecules'
# trajectories cooler (100-300 K), so that the crystals' force RMS is several times the
# molecules'; and the molecules' elements appear in the crystals only sparsely (no H or N; C only
# in SiC, O only in MgO). A first try with rattles x2.5 and MD x2 at the standard molecule
# temperatures gave a ratio of only 1.4 (tiny preset).
CONTRAST_CRYSTALS: tuple[str, ...] = ("Si_diamond", "SiC_3C", "MgO_rocksalt", "LiF_rocksalt", "Al_fcc")
CONTRAST_FACTORS = {"crystal_sigma_factor": 4.0, "crystal_strain_factor": 2.0, "crystal_T_factor": 3.0}
CONTRAST_MOLECULE_T = (100.0, 300.0)
MAKEUPS = ("standard", "contrast")


def contrast(preset: Preset) -> Preset:
    """``preset`` in the contrast make-up: the same size class (crystal counts scaled to the fewer
    chemistries), the same molecules (at lower temperatures), splits and DBS rules."""
    per_chemistry = len(preset.crystals) / len(CONTRAST_CRYSTALS)

    def scaled(counts: tuple[int, int, int]) -> tuple[int, int, int]:
        return tuple(max(1, round(n * per_chemistry)) for n in counts)

    return dataclasses.replace(
        preset,
        name=f"{preset.name}_contrast",
        crystals=CONTRAST_CRYSTALS,
        crystal_train=scaled(preset.crystal_train),
        crystal_test=scaled(preset.crystal_test),
        mol_T_range=CONTRAST_MOLECULE_T,
        **CONTRAST_FACTORS,
    )
