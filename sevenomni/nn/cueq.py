"""The convolution's 'uvu' tensor product as a cuEquivariance segmented polynomial, with fused gather/scatter.

The descriptor is built from the e3nn :class:`~e3nn.o3.TensorProduct` itself, path by path, so
both compute the same map on the same weights: the same Wigner-3j coefficients (e3nn's), each
scaled by e3nn's normalisation of that path, the weights of each path in e3nn's order. cuEquivariance
works in the ``ir_mul`` layout (each block stored component-major); node features are transposed
into it before the edges gather them, and the aggregated messages back to e3nn's ``mul_ir``
afterwards.

On CUDA tensors the polynomial runs through cuEquivariance's ``uniform_1d`` kernel (gathering
senders and scattering to receivers inside the kernel) when ``cuequivariance_ops_torch`` is
installed; elsewhere through its PyTorch fallback (``naive``).
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import nn

from sevenomni.nn.backend import cueq_kernels_installed
from sevenomni.nn.slicing import cat, split_slices_in


def _blocks(irreps: o3.Irreps) -> list[tuple[int, int]]:
    return [(mul, ir.dim) for mul, ir in irreps]


def to_ir_mul(x: torch.Tensor, blocks: list[tuple[int, int]]) -> torch.Tensor:
    """Features in e3nn's ``mul_ir`` layout → ``ir_mul`` (each [mul, dim] block stored as [dim, mul])."""
    pieces = x.split([mul * dim for mul, dim in blocks], dim=-1)
    return cat(
        [p.reshape(-1, mul, dim).transpose(1, 2).reshape(-1, mul * dim) for p, (mul, dim) in zip(pieces, blocks)],
        dim=-1,
    )


def to_mul_ir(x: torch.Tensor, blocks: list[tuple[int, int]]) -> torch.Tensor:
    """The inverse of :func:`to_ir_mul`."""
    pieces = x.split([mul * dim for mul, dim in blocks], dim=-1)
    return cat(
        [p.reshape(-1, dim, mul).transpose(1, 2).reshape(-1, mul * dim) for p, (mul, dim) in zip(pieces, blocks)],
        dim=-1,
    )


def channelwise_polynomial(tp: o3.TensorProduct, for_kernel: bool):
    """The cuEquivariance polynomial [weights, x1 (ir_mul), x2] → output (ir_mul) of ``tp``.

    ``tp`` must consist of weighted 'uvu' paths, one per output slot (as
    :class:`~sevenomni.nn.interaction.Convolution` builds it). ``for_kernel``: in the form of the
    ``uniform_1d`` kernel (Clebsch-Gordan blocks flattened to scalar paths, channel blocks cut to one
    size); otherwise one path per e3nn path with its coefficient block (fewer, larger operations,
    which suits the PyTorch fallback).
    """
    import cuequivariance as cue

    if any(ins.connection_mode != "uvu" or not ins.has_weight for ins in tp.instructions):
        raise ValueError("only weighted 'uvu' tensor products have a cuEquivariance descriptor here")
    slots = [ins.i_out for ins in tp.instructions]
    if sorted(slots) != list(range(len(tp.irreps_out))):
        raise ValueError("each output slot must come from exactly one path")

    d = cue.SegmentedTensorProduct.from_subscripts("uv,iu,jv,kuv+ijk")
    for mul, ir in tp.irreps_in1:
        d.add_segment(1, (ir.dim, mul))
    for mul, ir in tp.irreps_in2:
        d.add_segment(2, (ir.dim, mul))
    for i_out, (mul, ir) in enumerate(tp.irreps_out):
        ins = tp.instructions[slots.index(i_out)]
        d.add_segment(3, (ir.dim, mul, tp.irreps_in2[ins.i_in2].mul))
    for ins in tp.instructions:  # weight segments in e3nn's order
        l1, l2, l3 = tp.irreps_in1[ins.i_in1].ir.l, tp.irreps_in2[ins.i_in2].ir.l, tp.irreps_out[ins.i_out].ir.l
        coefficients = o3.wigner_3j(l1, l2, l3, dtype=torch.float64) * ins.path_weight
        d.add_path(None, ins.i_in1, ins.i_in2, ins.i_out, c=coefficients.numpy())
    if for_kernel:
        d = d.flatten_coefficient_modes().squeeze_modes()
        muls = {mul for mul, _ in tp.irreps_in1}
        if len(muls) > 1:  # uniform segments: every channel block cut into pieces of the common divisor
            d = d.split_mode("u", math.gcd(*muls))
    else:
        d = d.squeeze_modes()
    return cue.SegmentedPolynomial.eval_last_operand(d)


def _transient(module: nn.Module) -> nn.Module:
    """Keep ``module``'s buffers (constants) out of the state dict: the backend is not part of the weights."""
    for submodule in module.modules():
        submodule._non_persistent_buffers_set.update(submodule._buffers)
    return module


class CueChannelwiseConvolution(nn.Module):
    """Σ_j TP(h_j, Y_ij; w_ij) into each receiver i, by cuEquivariance, in e3nn's layouts and normalisation."""

    def __init__(self, tp: o3.TensorProduct):
        super().__init__()
        import cuequivariance_torch as cuet

        self.in_blocks, self.out_blocks = _blocks(tp.irreps_in1), _blocks(tp.irreps_out)
        self.fallback = cuet.SegmentedPolynomial(channelwise_polynomial(tp, for_kernel=False), method="naive")
        split_slices_in(self.fallback)
        self.kernel = None
        if cueq_kernels_installed():
            self.kernel = cuet.SegmentedPolynomial(channelwise_polynomial(tp, for_kernel=True), method="uniform_1d")
        _transient(self)

    def forward(
        self, h: torch.Tensor, edge_sh: torch.Tensor, weight: torch.Tensor, sender: torch.Tensor, receiver: torch.Tensor
    ) -> torch.Tensor:
        run = self.kernel if self.kernel is not None and h.is_cuda else self.fallback
        [messages] = run(
            [weight, to_ir_mul(h, self.in_blocks), edge_sh],
            input_indices={1: sender},
            output_shapes={0: h},
            output_indices={0: receiver},
        )
        return to_mul_ir(messages, self.out_blocks)
