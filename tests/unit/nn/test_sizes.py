"""The published model sizes build, with SevenNet-0's exact parameter count."""

from ase.data import chemical_symbols

import sevenomni

SEVENNET_0 = dict(
    channels=128,
    lmax=2,
    parity="so3",
    num_layers=5,
    cutoff=5.0,
    hidden_irreps="128x0e+64x1e+32x2e",
    self_connection="linear",
    envelope="xplor",
    xplor_on=4.5,
    scale_per_element=True,
)


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_sevennet_0_size_has_its_published_parameter_count():
    model = sevenomni.build_model(["pbe"], chemical_symbols[1:90], task_embedding_sites=[], **SEVENNET_0)
    assert count(model) == 842_623


def test_multi_fidelity_sevennet_size():
    # Two tasks with embeddings in SI-1, SI-2 and the readout, one shared per-element scale.
    model = sevenomni.build_model(
        ["pbe", "r2scan"],
        chemical_symbols[1:90],
        task_embedding_sites=["si1", "si2", "readout"],
        scale_per_task=False,
        **SEVENNET_0,
    )
    assert count(model) == 846_168
    embeddings = sum(p.numel() for _, p in model.task_embedding_parameters())
    assert embeddings == 2 * (5 * 128 + 4 * 224 + 128 + 64)


def test_omni_size_builds():
    model = sevenomni.build_model(
        [f"task{i}" for i in range(7)],
        chemical_symbols[1:90],
        channels=128,
        lmax=3,
        parity="o3",
        num_layers=5,
        cutoff=6.0,
        hidden_irreps="128x0e+64x1o+64x1e+32x2o+32x2e+32x3o+32x3e",
        self_connection="species",
    )
    assert 20e6 < count(model) < 30e6
    assert model.cutoff == 6.0 and len(model.layers) == 5
