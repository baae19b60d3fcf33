"""One NequIP interaction layer: self-connection, task linears, 'uvu' convolution and gate."""

from __future__ import annotations

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet
from torch import nn

from sevenomni.nn.backend import uses_cueq
from sevenomni.nn.gate import build_gate
from sevenomni.nn.indexing import gather_rows, scatter_sum
from sevenomni.nn.linear import EquivariantLinear
from sevenomni.nn.task import TaskLinear


def reachable_irreps(irreps_in: o3.Irreps, irreps_sh: o3.Irreps, wanted: o3.Irreps) -> o3.Irreps:
    """The part of ``wanted`` that a tensor product of ``irreps_in`` with ``irreps_sh`` can produce."""
    produced = {ir_out for _, ir_in in irreps_in for _, ir_sh in irreps_sh for ir_out in ir_in * ir_sh}
    return o3.Irreps([(mul, ir) for mul, ir in wanted if ir in produced])


class Convolution(nn.Module):
    """m_i = Σ_j TP_uvu(h_j, Y(r̂_ij); w = MLP(radial(r_ij))) / denominator."""

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_sh: o3.Irreps,
        wanted: o3.Irreps,
        num_radial: int,
        radial_mlp: list[int],
        denominator: float,
    ):
        super().__init__()
        wanted_irreps = {ir for _, ir in wanted}
        outputs, instructions = [], []
        for i, (mul, ir_in) in enumerate(irreps_in):
            for j, (_, ir_sh) in enumerate(irreps_sh):
                for ir_out in ir_in * ir_sh:
                    if ir_out in wanted_irreps:
                        instructions.append((i, j, len(outputs), "uvu", True))
                        outputs.append((mul, ir_out))
        irreps_out, permutation, _ = o3.Irreps(outputs).sort()
        # Output slots in sorted order; weights laid out path by path in that order.
        instructions = sorted(
            [(i, j, permutation[k], mode, w) for i, j, k, mode, w in instructions], key=lambda ins: ins[2]
        )
        self.irreps_out = irreps_out
        self.tp = o3.TensorProduct(
            irreps_in, irreps_sh, irreps_out, instructions, shared_weights=False, internal_weights=False
        )
        self.radial_net = FullyConnectedNet(
            [num_radial, *radial_mlp, self.tp.weight_numel], torch.nn.functional.silu
        )
        # A fixed divisor, kept with the weights (a non-trainable parameter) so checkpoints carry it.
        self.denominator = nn.Parameter(torch.tensor([float(denominator)]), requires_grad=False)
        self.backend, self.cue = "e3nn", None
        self.radial_dtype: torch.dtype | None = None  # None: the radial MLP runs in the model's dtype

    def set_radial_dtype(self, dtype: torch.dtype | None) -> None:
        """Run the radial MLP under autocast to ``dtype`` (e.g. bfloat16), or in the model's dtype (None);
        the tensor product always takes the weights in the model's dtype."""
        self.radial_dtype = dtype

    def radial_weights(self, edge_radial: torch.Tensor) -> torch.Tensor:
        """The per-edge tensor-product weights from the radial basis."""
        if self.radial_dtype is None:
            return self.radial_net(edge_radial)
        with torch.autocast(edge_radial.device.type, dtype=self.radial_dtype):
            weight = self.radial_net(edge_radial)
        return weight.to(edge_radial.dtype)

    def set_backend(self, backend: str) -> None:
        """Run the tensor product with ``backend`` (see :mod:`sevenomni.nn.backend`); weights unchanged."""
        if backend == self.backend:
            return
        self.cue = None
        if uses_cueq(backend):
            from sevenomni.nn.cueq import CueChannelwiseConvolution

            reference = self.denominator
            self.cue = CueChannelwiseConvolution(self.tp).to(device=reference.device, dtype=reference.dtype)
        self.backend = backend

    def forward(
        self, h: torch.Tensor, edge_index: torch.Tensor, edge_sh: torch.Tensor, edge_radial: torch.Tensor
    ) -> torch.Tensor:
        sender, receiver = edge_index
        weight = self.radial_weights(edge_radial)
        if self.cue is not None and (self.backend == "cueq" or h.is_cuda):
            aggregated = self.cue(h, edge_sh, weight, sender, receiver)
        else:
            messages = self.tp(gather_rows(h, sender), edge_sh, weight)
            aggregated = scatter_sum(messages, receiver, h.shape[0])
        return aggregated / self.denominator


class SelfConnection(nn.Module):
    """Skip path: a linear map of x, or x ⊗ species one-hot (one linear map per species)."""

    def __init__(self, irreps_in: o3.Irreps, irreps_species: o3.Irreps, irreps_out: o3.Irreps, kind: str):
        super().__init__()
        self.kind = kind
        if kind == "species":
            self.map = o3.FullyConnectedTensorProduct(irreps_in, irreps_species, irreps_out)
        else:
            self.map = EquivariantLinear(irreps_in, irreps_out)

    def forward(self, x: torch.Tensor, species_onehot: torch.Tensor) -> torch.Tensor:
        if self.kind == "species":
            return self.map(x, species_onehot)
        return self.map(x)


class Interaction(nn.Module):
    """x ← Gate(TaskLinear₂(conv(TaskLinear₁(x))) + SelfConnection(x))."""

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_sh: o3.Irreps,
        irreps_species: o3.Irreps,
        wanted: o3.Irreps,
        *,
        num_tasks_si1: int,
        num_tasks_si2: int,
        normalize_task_scalars: bool = False,
        num_radial: int,
        radial_mlp: list[int],
        denominator: float,
        self_connection: str,
    ):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.gate = build_gate(reachable_irreps(self.irreps_in, irreps_sh, wanted))
        self.irreps_out = self.gate.irreps_out
        pre_gate = self.gate.irreps_in
        self.self_connection = SelfConnection(self.irreps_in, irreps_species, pre_gate, self_connection)
        self.si1 = TaskLinear(self.irreps_in, self.irreps_in, num_tasks_si1, normalize_task_scalars)
        self.conv = Convolution(self.irreps_in, irreps_sh, pre_gate, num_radial, radial_mlp, denominator)
        # SI-2 reads the convolution output with the blocks of one irrep merged: one linear path per
        # irrep instead of one per tensor-product path. The features' flat layout is the same, and as
        # the gate input holds each irrep once, so is the flat weight layout (older files load as-is).
        self.si2 = TaskLinear(self.conv.irreps_out.simplify(), pre_gate, num_tasks_si2, normalize_task_scalars)

    def forward(
        self,
        x: torch.Tensor,
        species_onehot: torch.Tensor,
        edge_index: torch.Tensor,
        edge_sh: torch.Tensor,
        edge_radial: torch.Tensor,
        node_task: torch.Tensor | None,
    ) -> torch.Tensor:
        skip = self.self_connection(x, species_onehot)
        h = self.si1(x, node_task)
        h = self.conv(h, edge_index, edge_sh, edge_radial)
        h = self.si2(h, node_task)
        return self.gate(h + skip)
