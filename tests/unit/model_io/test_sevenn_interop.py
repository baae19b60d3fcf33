"""SevenNet checkpoints load into sevenomni and reproduce SevenNet's own calculator exactly.

Every checkpoint shipped with the ``sevenn`` wheel (and two small synthetic ones covering the
options the shipped ones do not use) is evaluated by SevenNet's calculator and by the converted
sevenomni model on periodic, surface, molecular and isolated-atom structures of several
chemistries. Skipped where ``sevenn`` (the reference) is not installed.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc111, molecule

sevenn = pytest.importorskip("sevenn")

from sevenomni import CheckpointError, SevenOmniCalculator, load_model  # noqa: E402
from sevenomni.cli import main  # noqa: E402
from sevenomni.model_io.sevenn.config import sevenn_model_config  # noqa: E402
from sevenomni.model_io.sevenn.convert import load_sevenn_model, sevenn_to_model  # noqa: E402
from sevenomni.model_io.sevenn.files import read_sevenn_checkpoint, resolve_sevenn_checkpoint  # noqa: E402

E_TOL, F_TOL, S_TOL = 1e-5, 1e-4, 1e-5  # eV/atom, eV/Å, eV/Å³

SHIPPED = {  # name: (modalities, parameters of SevenNet's model)
    "7net-0": ([None], 842_623),
    "7net-0_22May2024": ([None], 842_623),
    "7net-l3i5": ([None], 1_171_327),
    "7net-mf-0": (["PBE", "R2SCAN"], 846_168),
}
CHANNELS = [(name, modal) for name, (modals, _) in SHIPPED.items() for modal in modals]


def structures() -> dict[str, Atoms]:
    """Periodic bulk (incl. a cell smaller than the cutoff), a slab, molecules and isolated atoms."""
    nacl = bulk("NaCl", "rocksalt", a=5.6, cubic=True).repeat((2, 1, 1))
    nacl.rattle(0.1, seed=1)
    oxide = bulk("Si", "diamond", a=5.43).repeat((2, 2, 1))
    oxide.numbers[:3] = [8, 72, 1]  # O, Hf, H in silicon
    oxide.rattle(0.15, seed=2)
    oxide.set_cell(oxide.cell.array @ np.array([[1, 0.03, 0], [0, 1, 0.02], [0.04, 0, 1]]), scale_atoms=True)
    mgo = bulk("MgO", "rocksalt", a=4.2)  # 2 atoms, many periodic images
    mgo.rattle(0.05, seed=3)
    slab = fcc111("Cu", (2, 2, 3), vacuum=6.0)
    add_adsorbate(slab, "C", 1.85, "ontop")
    add_adsorbate(slab, "O", 3.0, "ontop")
    slab.rattle(0.05, seed=5)
    slab.pbc = [True, True, False]
    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.05, seed=4)
    water_and_ion = molecule("H2O") + Atoms("Na", positions=[[15.0, 0.0, 0.0]])  # Na has no neighbour
    return {
        "NaCl": nacl,
        "Si-O-Hf-H triclinic": oxide,
        "MgO primitive": mgo,
        "Cu(111)+CO slab": slab,
        "ethanol": ethanol,
        "H2O + isolated Na": water_and_ion,
        "isolated Ar": Atoms("Ar", positions=[[0.0, 0.0, 0.0]]),
    }


def evaluate(calculator, atoms: Atoms) -> dict:
    atoms = atoms.copy()
    atoms.calc = calculator
    result = {"energy": atoms.get_potential_energy()}
    try:
        forces = atoms.get_forces()
    except Exception:  # noqa: BLE001 - SevenNet may have no force for a structure without edges
        forces = None
    if forces is not None and np.all(np.isfinite(forces)):
        result["forces"] = forces
    if atoms.pbc.any():
        result["stress"] = atoms.get_stress()
    return result


def assert_same(reference: dict, ours: dict, atoms: Atoms, label: str) -> None:
    n = len(atoms)
    assert abs(reference["energy"] - ours["energy"]) / n < E_TOL, (label, reference["energy"], ours["energy"])
    if "forces" in reference:
        assert np.abs(reference["forces"] - ours["forces"]).max() < F_TOL, label
    if len(atoms) == 1 or "forces" not in reference:
        assert np.abs(ours["forces"]).max() == 0.0, label
    if "stress" in reference:
        assert np.abs(reference["stress"] - ours["stress"]).max() < S_TOL, label


@pytest.fixture(scope="module")
def ours():
    models: dict[str, object] = {}

    def get(name):
        if name not in models:
            models[name] = load_sevenn_model(name)
        return models[name]

    return get


@pytest.fixture(scope="module")
def reference():
    from sevenn.calculator import SevenNetCalculator

    calculators: dict[tuple, object] = {}

    def get(name, modal=None):
        if (name, modal) not in calculators:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                calculators[name, modal] = SevenNetCalculator(name, device="cpu", modal=modal)
        return calculators[name, modal]

    return get


@pytest.mark.parametrize("name,modal", CHANNELS, ids=[f"{n}-{m}" if m else n for n, m in CHANNELS])
def test_shipped_checkpoints_match_sevenn(name, modal, ours, reference):
    model = ours(name)
    ours_calc = SevenOmniCalculator(model, task=modal, device="cpu")
    for label, atoms in structures().items():
        assert_same(
            evaluate(reference(name, modal), atoms), evaluate(ours_calc, atoms), atoms, f"{name}/{modal}/{label}"
        )


@pytest.mark.parametrize("name", list(SHIPPED))
def test_parameter_counts_equal(name, ours, reference):
    modals, expected = SHIPPED[name]
    theirs = sum(p.numel() for p in reference(name, modals[0]).model.parameters())
    mine = sum(p.numel() for p in ours(name).parameters())
    assert mine == theirs == expected


def test_multifidelity_tasks_and_embeddings(ours):
    model = ours("7net-mf-0")
    assert model.tasks == ["R2SCAN", "PBE"]  # SevenNet's modal indices
    assert model.config.task_embedding_sites == ["si1", "si2", "readout"]
    assert not model.config.scale_per_task and model.config.scale_per_element
    # θT: the modal one-hot blocks of every SI-1 (128), SI-2 (224 or 128 scalars out) and readout (64).
    assert sum(p.numel() for _, p in model.task_embedding_parameters()) == 2 * (5 * 128 + 4 * 224 + 128 + 64)
    single = ours("7net-0")
    assert single.tasks == ["sevenn"] and not list(single.task_embedding_parameters())


def test_task_name_and_old_checkpoint_options():
    raw = read_sevenn_checkpoint(resolve_sevenn_checkpoint("7net-0_22May2024"))
    config = sevenn_model_config(raw["config"], raw["model_state_dict"], task_name="PBE54")
    assert config.tasks == ["PBE54"]
    assert config.sh_normalize is False  # absent in 0.9 configs: SevenNet reads it as False
    assert config.envelope == "xplor" and config.xplor_on == 4.5
    assert config.avg_num_neighbors == pytest.approx([36.99629592895508] * 5)  # the state dict's, not the config's


def test_cli_import_and_load_model_fallback(tmp_path, ours):
    out = tmp_path / "mf0.pt"
    assert main(["import-sevenn", "7net-mf-0", "--out", str(out)]) == 0
    converted = load_model(out)
    direct = load_model(resolve_sevenn_checkpoint("7net-mf-0"))  # a SevenNet file through the generic loader
    expected = ours("7net-mf-0").state_dict()
    for model in (converted, direct):
        assert model.tasks == ["R2SCAN", "PBE"]
        state = model.state_dict()
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[k], expected[k]) for k in expected)
    metadata = torch.load(out, weights_only=True)["metadata"]
    assert metadata["imported_from"] == "sevenn" and metadata["sevenn_modal_map"] == {"R2SCAN": 0, "PBE": 1}
    assert main(["import-sevenn", "7net-mf-0", "--out", str(tmp_path / "x.pt"), "--task-name", "pbe"]) == 2
    assert main(["import-sevenn", "7net-nonexistent", "--out", str(tmp_path / "x.pt")]) == 2


def test_converted_model_runs_without_sevenn(tmp_path, reference):
    """The reader never imports sevenn: run it in a process where importing sevenn fails."""
    path = resolve_sevenn_checkpoint("7net-0")
    code = (
        "import sys; sys.modules['sevenn'] = None\n"
        "from ase.build import bulk\n"
        "from sevenomni import SevenOmniCalculator, load_model\n"
        f"model = load_model({str(path)!r})\n"
        "atoms = bulk('NaCl', 'rocksalt', a=5.6)\n"
        "atoms.calc = SevenOmniCalculator(model, device='cpu')\n"
        "print(repr(atoms.get_potential_energy()))\n"
        "assert not [m for m, v in sys.modules.items() if m.startswith('sevenn') and v is not None]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    atoms = bulk("NaCl", "rocksalt", a=5.6)
    expected = evaluate(reference("7net-0"), atoms)["energy"]
    assert abs(float(done.stdout.strip().splitlines()[-1]) - expected) / len(atoms) < E_TOL


# --------------------------------------------------------------------------------------------
# Options the shipped checkpoints do not use: small random SevenNet models built by sevenn
# --------------------------------------------------------------------------------------------
SPECIES = ["C", "H", "N", "O", "Si"]


def synthetic_checkpoint(**options) -> dict:
    """A randomly initialised SevenNet model as a checkpoint dict (built by sevenn itself)."""
    import sevenn._const as const
    from ase.data import atomic_numbers
    from sevenn.model_build import build_E3_equivariant_model

    config = copy.deepcopy(const.DEFAULT_E3_EQUIVARIANT_MODEL_CONFIG)
    config.update(
        version=sevenn.__version__,
        cutoff=4.0,
        channel=8,
        lmax=2,
        num_convolution_layer=3,
        conv_denominator=[5.0, 6.0, 7.0],
        chemical_species=SPECIES,
        _number_of_species=len(SPECIES),
        _type_map={atomic_numbers[s]: i for i, s in enumerate(SPECIES)},  # alphabetical, as SevenNet does
        shift=[-1.0, -2.0, -3.0, -4.0, -5.0],
        scale=[1.1, 1.2, 1.3, 1.4, 1.5],
    )
    config.update(options)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_E3_equivariant_model(copy.deepcopy(config))
    return {"config": config, "model_state_dict": model.state_dict(), "epoch": 0}


SYNTHETIC = {
    # O(3) harmonics with SevenNet's default irreps, species ('nequip') self-connection, polynomial
    # envelope, modal-wise shift and scale, task embeddings on SI-1 and the readout only, and a
    # universal-style dummy element Z = 0 in the type map.
    "o3-species-sc-modal": dict(
        is_parity=True,
        self_connection_type="nequip",
        chemical_species=["X", *SPECIES],
        _number_of_species=6,
        _type_map={0: 0, 6: 1, 1: 2, 7: 3, 8: 4, 14: 5},
        shift=[[0.5, -1.0, -2.0, -3.0, -4.0, -5.0], [0.0, -2.0, -3.0, -1.0, -4.0, -6.0]],
        scale=[[1.0, 1.1, 1.2, 1.3, 1.4, 1.5], [1.0, 1.7, 1.6, 1.5, 0.9, 0.8]],
        use_modality=True,
        _modal_map={"hifi": 0, "lowfi": 1},
        _number_of_modalities=2,
        use_modal_wise_shift=True,
        use_modal_wise_scale=True,
        use_modal_self_inter_intro=True,
        use_modal_output_block=True,
    ),
    # SO(3), SH lmax above the node lmax, manual irreps, linear self-connection, XPLOR,
    # unnormalised harmonics, one shift and one scale for all species.
    "so3-lmax-edge-scalar-rescale": dict(
        is_parity=False,
        lmax=1,
        lmax_edge=2,
        irreps_manual=["8x0e", "8x0e+4x1e", "8x0e+4x1e", "8x0e"],
        self_connection_type="linear",
        cutoff_function={"cutoff_function_name": "XPLOR", "cutoff_on": 3.5},
        _normalize_sph=False,
        shift=-3.0,
        scale=1.3,
    ),
}


@pytest.mark.parametrize("variant", list(SYNTHETIC))
def test_synthetic_options_match_sevenn(variant, tmp_path):
    from sevenn.calculator import SevenNetCalculator

    path = tmp_path / "synthetic.pth"
    torch.save(synthetic_checkpoint(**SYNTHETIC[variant]), path)
    model = load_model(path)
    modals = list(SYNTHETIC[variant].get("_modal_map", {None: 0}))
    assert model.tasks == (modals if modals != [None] else ["sevenn"])
    crystal = bulk("Si", "diamond", a=5.43)
    crystal.numbers[1] = 6
    crystal = crystal.repeat((2, 1, 1))
    crystal.numbers[2] = 7
    crystal.rattle(0.1, seed=0)
    cases = {"SiCN crystal": crystal, "ethanol": structures()["ethanol"]}
    for modal in modals:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = SevenNetCalculator(str(path), device="cpu", modal=modal)
        mine = SevenOmniCalculator(model, task=modal, device="cpu")
        for label, atoms in cases.items():
            assert_same(evaluate(theirs, atoms), evaluate(mine, atoms), atoms, f"{variant}/{modal}/{label}")


# --------------------------------------------------------------------------------------------
# What cannot be represented fails loudly, naming the option
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mf0_raw():
    return read_sevenn_checkpoint(resolve_sevenn_checkpoint("7net-mf-0"))


def with_config(raw: dict, **changes) -> dict:
    changed = dict(raw)
    changed["config"] = {**raw["config"], **changes}
    return changed


@pytest.mark.parametrize(
    "changes,option",
    [
        (dict(use_bias_in_linear=True), "use_bias_in_linear"),
        (dict(readout_as_fcn=True), "readout_as_fcn"),
        (dict(use_modal_node_embedding=True), "use_modal_node_embedding"),
        (dict(interaction_type="allegro"), "interaction_type"),
        (dict(act_radial="ssp"), "act_radial"),
        (dict(act_gate={"e": "ssp", "o": "tanh"}), "act_gate"),
        (dict(self_connection_type=["linear", "nequip", "linear", "linear", "linear"]), "self_connection_type"),
        (dict(cutoff_function={"cutoff_function_name": "cosine"}), "cutoff_function"),
        (dict(cuequivariance_config={"use": True}), "cuequivariance_config"),
        (dict(use_flash_tp=True), "use_flash_tp"),
        (dict(irreps_manual=["64x0e", *["128x0e+64x1e+32x2e"] * 4, "128x0e"]), "irreps_manual"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_unrepresentable_options_fail_naming_them(mf0_raw, changes, option):
    with pytest.raises(CheckpointError, match=option):
        sevenn_to_model(with_config(mf0_raw, **changes))


def test_unrepresentable_layout_and_stray_weights_fail(tmp_path):
    raw = synthetic_checkpoint(is_parity=False, irreps_manual=["8x0e", "8x0e+4x1e", "8x0e+2x1e", "8x0e"])
    with pytest.raises(CheckpointError, match="irreps_manual"):
        sevenn_to_model(raw)  # hidden layers differ: sevenomni has one hidden irreps
    raw = synthetic_checkpoint(is_parity=False)
    raw["model_state_dict"]["0_self_interaction_1.linear.bias"] = torch.ones(8)
    path = tmp_path / "bias.pth"
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="use_bias_in_linear"):
        load_model(path)  # through the generic loader
