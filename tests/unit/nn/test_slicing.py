"""e3nn's sliced blocks become splits: bitwise the same values and gradients, fewer zero-fills."""

import copy

import pytest
import torch
from e3nn import o3

from sevenomni.nn.interaction import Convolution
from sevenomni.nn.slicing import split_slices_in


def zero_fills(function):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        function()
    return sum(e.count for e in profile.key_averages() if e.key in ("aten::fill_", "aten::zero_"))


def second_order(conv, inputs, edge_index):
    """Gradients of a loss on d(out)/d(h) — the double backward of force training."""
    h, sh, radial = [x.clone().requires_grad_(True) for x in inputs]
    out = conv(h, edge_index, sh, radial)
    (dh,) = torch.autograd.grad(out.square().sum(), h, create_graph=True)
    return out, dh, torch.autograd.grad(dh.square().sum(), [radial, sh] + [p for p in conv.parameters() if p.requires_grad], allow_unused=True)


@pytest.fixture
def setup():
    torch.manual_seed(0)
    irreps_in = o3.Irreps("4x0e+3x1o+2x2e")
    irreps_sh = o3.Irreps.spherical_harmonics(2)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        conv = Convolution(irreps_in, irreps_sh, o3.Irreps("4x0e+4x1o+4x2e+2x1e"), 6, [8], 3.0)
    finally:
        torch.set_default_dtype(previous)
    plain = copy.deepcopy(conv)
    nodes, edges = 5, 12
    edge_index = torch.randint(0, nodes, (2, edges))
    inputs = [torch.randn(nodes, irreps_in.dim), torch.randn(edges, irreps_sh.dim), torch.randn(edges, 6)]
    return conv, plain, [x.double() for x in inputs], edge_index


def test_splits_are_exact_to_second_order(setup):
    conv, plain, inputs, edge_index = setup
    assert split_slices_in(conv) > 0
    for a, b in zip(second_order(plain, inputs, edge_index), second_order(conv, inputs, edge_index)):
        if isinstance(a, tuple):
            assert all((x is None and y is None) or torch.equal(x, y) for x, y in zip(a, b))
        else:
            assert torch.equal(a, b)


def test_splits_remove_zero_filled_gradient_buffers(setup):
    conv, plain, inputs, edge_index = setup
    split_slices_in(conv)
    assert zero_fills(lambda: second_order(conv, inputs, edge_index)) < zero_fills(
        lambda: second_order(plain, inputs, edge_index)
    )
