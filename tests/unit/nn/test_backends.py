"""Tensor-product backends: e3nn and cuEquivariance give the same model on the same weights.

On CPU, cuEquivariance runs its PyTorch fallback, which evaluates the same descriptor as its CUDA
kernel; the tests marked ``cuda`` compare the kernel itself and skip where no GPU is present.
"""

from __future__ import annotations

import copy

import pytest
import torch
from ase.build import bulk
from conftest import make_model, structures

import sevenomni
from sevenomni.data.graph import atoms_to_graph, collate
from sevenomni.nn import backend

pytest.importorskip("cuequivariance_torch")

RELATIVE = {"float64": 1e-10, "float32": 1e-5}
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def one_thread():
    """Small models: one thread is fastest, and keeps the file quick on a shared CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_relatively_close(actual, expected, relative, what):
    scale = expected.abs().max().clamp_min(1e-30)
    error = (actual - expected).abs().max()
    assert error <= relative * scale, f"{what}: max deviation {float(error):.3g} vs scale {float(scale):.3g}"


def batch(model, atoms_list, task=0, device="cpu"):
    graphs = []
    for atoms in atoms_list:
        graph = atoms_to_graph(atoms, model.cutoff)
        graph.task = torch.tensor([task])
        graphs.append(graph)
    return collate(graphs).to(device)


def evaluate(model, graph, common):
    """Energy, forces, stress and the parameter gradients of a force-training loss (double backward)."""
    model.zero_grad()
    out = model(graph, common=common, create_graph=True)
    loss = out["energy"].square().sum() + out["forces"].square().sum() + out["stress"].square().sum()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: out[k].detach() for k in ("energy", "forces", "stress")}, grads


def assert_backends_agree(model, graph, dtype, backends=("e3nn", "cueq"), channels=(False, True)):
    """The same outputs and gradients on the task channel and (``True``) the common PES, θT dropped."""
    results = []
    for name in backends:
        model.set_tp_backend(name)
        for common in channels:
            results.append(evaluate(model, graph, common))
    half = len(results) // 2
    for (outputs, grads), (reference, reference_grads) in zip(results[half:], results[:half]):
        for key in reference:
            assert_relatively_close(outputs[key], reference[key], RELATIVE[dtype], key)
        assert grads.keys() == reference_grads.keys()
        for name in reference_grads:
            assert_relatively_close(grads[name], reference_grads[name], RELATIVE[dtype], f"d loss / d {name}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("parity", ["o3", "so3"])
@pytest.mark.parametrize("lmax", [1, 2, 3])
def test_cueq_equals_e3nn(lmax, parity, dtype):
    model = make_model(lmax=lmax, parity=parity, dtype=dtype, channels=4, radial_mlp=[8]).train()
    assert_backends_agree(model, batch(model, [structures()["triclinic"]], task=1), dtype)


def test_cueq_equals_e3nn_with_mixed_multiplicities_and_linear_self_connection():
    model = make_model(lmax=2, hidden_irreps="8x0e+4x1o+4x1e+2x2e", self_connection="linear", channels=8).train()
    assert_backends_agree(model, batch(model, [structures()["diamond"]]), "float64")


def test_imported_sevennet_model_is_the_same_with_cueq():
    pytest.importorskip("sevenn")
    model = sevenomni.load_model("7net-0", tp_backend="e3nn").train()
    atoms = bulk("SiC", "zincblende", a=4.36)
    atoms.rattle(0.05, seed=0)
    assert_backends_agree(model, batch(model, [atoms]), "float32", channels=(False,))


def test_one_state_dict_serves_every_backend(tmp_path):
    model = make_model(tp_backend="cueq")
    assert model.state_dict().keys() == make_model(tp_backend="e3nn").state_dict().keys()
    sevenomni.save_checkpoint(model, tmp_path / "model.pt")
    assert sevenomni.load_model(tmp_path / "model.pt").config.tp_backend == "cueq"
    as_e3nn = sevenomni.load_model(tmp_path / "model.pt", tp_backend="e3nn")
    assert as_e3nn.config.tp_backend == "e3nn" and as_e3nn.layers[0].conv.cue is None
    graph = batch(model, [structures()["triclinic"]])
    torch.testing.assert_close(as_e3nn(graph)["forces"], model(graph)["forces"], rtol=1e-10, atol=1e-12)


def test_auto_uses_kernels_only_where_they_are(monkeypatch):
    monkeypatch.setattr(backend, "cueq_kernels_installed", lambda: False)
    assert make_model(tp_backend="auto").layers[0].conv.cue is None
    monkeypatch.setattr(backend, "cueq_installed", lambda: False)
    with pytest.raises(ValueError, match=r"tp_backend 'cueq' needs cuEquivariance.*\.\[cuda\]"):
        make_model(tp_backend="cueq")
    with pytest.raises(ValueError, match="tp_backend must be one of"):
        sevenomni.load_model("7net-0", tp_backend="cuda")


def test_calculator_takes_a_backend_and_refuses_unknown_keywords():
    model = make_model()
    calculator = sevenomni.SevenOmniCalculator(model, task="crystal", tp_backend="cueq")
    assert calculator.model.config.tp_backend == "cueq" and model.config.tp_backend == "auto"
    atoms = structures()["diamond"]
    atoms.calc = calculator
    reference = copy.deepcopy(atoms)
    reference.calc = sevenomni.SevenOmniCalculator(model, task="crystal", tp_backend="e3nn")
    torch.testing.assert_close(
        torch.tensor(atoms.get_forces()), torch.tensor(reference.get_forces()), rtol=1e-10, atol=1e-12
    )
    with pytest.raises(TypeError, match=r"unknown keyword\(s\) \['tsak'\]"):
        sevenomni.SevenOmniCalculator(model, tsak="crystal")


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cuda_kernels_equal_e3nn(dtype):
    if not backend.cueq_kernels_installed():
        pytest.skip("cuequivariance_ops_torch (the CUDA kernels) is not installed")
    model = make_model(lmax=3, dtype=dtype, channels=32).to("cuda").train()
    graph = batch(model, [structures()["triclinic"], structures()["slab"]], device="cuda")
    assert_backends_agree(model, graph, dtype, backends=("e3nn", "auto"))
    assert model.layers[0].conv.cue.kernel is not None


def test_training_config_names_backend_and_compile():
    from pydantic import ValidationError

    from sevenomni.train.config import ModelSection, TrainSection

    assert ModelSection(init_from="runs/x/model.pt", tp_backend="e3nn").tp_backend == "e3nn"
    with pytest.raises(ValidationError, match="tp_backend"):
        ModelSection(tp_backend="cuda")
    assert TrainSection(compile=True).compile
    with pytest.raises(ValidationError, match="init_from"):
        ModelSection(init_from="runs/x/model.pt", channels=8)
