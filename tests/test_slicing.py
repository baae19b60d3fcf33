"""e3nn's sliced blocks become one split: bitwise the same values and gradients, fewer zero-fills."""

import copy

import torch
from e3nn import o3

from sevenomni.nn.interaction import Convolution
from sevenomni.nn.slicing import split_slices_in


def fills_in_backward(conv, h, sh, radial, edge_index):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        conv(h, edge_index, sh, radial).square().sum().backward()
    return sum(e.count for e in profile.key_averages() if e.key in ("aten::fill_", "aten::zero_"))


def test_split_is_exact_and_removes_zero_filled_gradients():
    torch.manual_seed(0)
    irreps_in = o3.Irreps("4x0e+3x1o+2x2e")
    irreps_sh = o3.Irreps.spherical_harmonics(2)
    conv = Convolution(irreps_in, irreps_sh, o3.Irreps("4x0e+4x1o+4x2e+2x1e"), 6, [8], 3.0).double()
    plain = copy.deepcopy(conv)
    assert split_slices_in(conv) > 0
    nodes, edges = 5, 12
    edge_index = torch.randint(0, nodes, (2, edges))
    inputs = [torch.randn(nodes, irreps_in.dim), torch.randn(edges, irreps_sh.dim), torch.randn(edges, 6)]
    results = []
    for module in (plain, conv):
        leaves = [x.double().requires_grad_(True) for x in inputs]
        out = module(leaves[0], edge_index, leaves[1], leaves[2])
        grads = torch.autograd.grad(out.square().sum(), leaves)
        results.append((out, grads))
    assert torch.equal(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        assert torch.equal(a, b)
    leaves = [x.double().requires_grad_(True) for x in inputs]
    assert fills_in_backward(conv, leaves[0], leaves[1], leaves[2], edge_index) < fills_in_backward(
        plain, leaves[0], leaves[1], leaves[2], edge_index
    )
