"""The convolution's 'uvu' tensor product as a cuEquivariance segmented polynomial, with fused gather/scatter.

The descriptor is built from the e3nn :class:`~e3nn.o3.TensorProduct` itself, path by path, so
both compute the same map on the same weights: the same Wigner-3j coefficients (e3nn's), each
scaled by e3nn's normalisation of that path, the weights of each path in e3nn's order. cuEquivariance
works in the ``ir_mul`` layout (each block stored component-major); node features are permuted
into it before the edges gather them, and the aggregated messages back to e3nn's ``mul_ir``
afterwards, each direction one column gather (:func:`~sevenomni.nn.indexing.permute_columns`).

On CUDA tensors the polynomial runs through cuEquivariance's ``uniform_1d`` kernel (gathering
senders and scattering to receivers inside the kernel) when ``cuequivariance_ops_torch`` is
installed; elsewhere through its PyTorch fallback (``naive``). The kernel library plans (and
times) a kernel for each new problem size; node rows are padded to a multiple of
:data:`NODE_BUCKET` on that path, so that structures or batches of similar size share one plan.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import nn

from sevenomni.nn.backend import cueq_kernels_installed
from sevenomni.nn.indexing import inverse_permutation, permute_columns
from sevenomni.nn.slicing import split_slices_in

# Node rows are padded to a multiple of this on the kernel path (one kernel plan per bucket).
NODE_BUCKET = 256


def ir_mul_permutation(irreps: o3.Irreps) -> torch.Tensor:
    """Columns of a ``mul_ir`` feature vector in ``ir_mul`` order (each [mul, dim] block as [dim, mul])."""
    pieces, offset = [], 0
    for mul, ir in irreps:
        pieces.append(offset + torch.arange(mul * ir.dim).view(mul, ir.dim).t().reshape(-1))
        offset += mul * ir.dim
    return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long)


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

        to_ir_mul = ir_mul_permutation(tp.irreps_in1)
        self.register_buffer("to_ir_mul", to_ir_mul)
        self.register_buffer("from_ir_mul", inverse_permutation(to_ir_mul))
        out_to_ir_mul = ir_mul_permutation(tp.irreps_out)
        self.register_buffer("out_to_ir_mul", out_to_ir_mul)
        self.register_buffer("out_from_ir_mul", inverse_permutation(out_to_ir_mul))
        self.fallback = cuet.SegmentedPolynomial(channelwise_polynomial(tp, for_kernel=False), method="naive")
        split_slices_in(self.fallback)
        self.kernel = None
        if cueq_kernels_installed():
            self.kernel = cuet.SegmentedPolynomial(channelwise_polynomial(tp, for_kernel=True), method="uniform_1d")
        _transient(self)

    def executor(self, h: torch.Tensor) -> tuple[nn.Module, int]:
        """What evaluates the polynomial for ``h``, and the multiple its node rows are padded to."""
        if self.kernel is not None and h.is_cuda:
            return self.kernel, NODE_BUCKET
        return self.fallback, 1

    def forward(
        self, h: torch.Tensor, edge_sh: torch.Tensor, weight: torch.Tensor, sender: torch.Tensor, receiver: torch.Tensor
    ) -> torch.Tensor:
        run, bucket = self.executor(h)
        nodes = h.shape[0]
        h = permute_columns(h, self.to_ir_mul, self.from_ir_mul)
        if nodes % bucket:
            h = torch.nn.functional.pad(h, (0, 0, 0, bucket - nodes % bucket))
        [messages] = run(
            [weight, h, edge_sh],
            input_indices={1: sender},
            output_shapes={0: h},
            output_indices={0: receiver},
        )
        if messages.shape[0] != nodes:
            messages = messages.narrow(0, 0, nodes)
        return permute_columns(messages, self.out_from_ir_mul, self.out_to_ir_mul)
