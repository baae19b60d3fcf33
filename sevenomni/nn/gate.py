"""The gate nonlinearity: e3nn's :class:`~e3nn.nn.Gate`, evaluated in a handful of operations.

e3nn's gate extracts its three parts block by block, activates block by block and multiplies each
gated block by its gates through an element-wise tensor product (~100 operators forward for the
hidden features of a 128-channel, lmax-3 model). :class:`FusedGate` keeps e3nn's module (its
irreps, normalised activations and state-dict entries) and computes the same values with three
column gathers, one activation per scalar block, one gather that repeats each gate over the
components of the irrep it gates, and one product.
"""

from __future__ import annotations

import torch
from e3nn import o3
from e3nn.nn import Gate

SCALAR_ACTIVATIONS = {1: torch.nn.functional.silu, -1: torch.tanh}
GATE_ACTIVATIONS = {1: torch.nn.functional.silu, -1: torch.tanh}


def _columns(irreps: o3.Irreps, blocks: tuple[int, ...]) -> torch.Tensor:
    """Flat column indices of ``blocks`` of a feature vector of ``irreps``, in that order."""
    slices = irreps.slices()
    return torch.cat([torch.arange(slices[b].start, slices[b].stop) for b in blocks] or [torch.zeros(0, dtype=torch.long)])


def _same_function(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return getattr(a, "f", a) is getattr(b, "f", b) and getattr(a, "cst", None) == getattr(b, "cst", None)


def _activation_blocks(activation) -> list[tuple[int, int, object]]:
    """(start, width, function) of an e3nn ``Activation``'s input, neighbouring blocks that share
    a function merged into one."""
    out, position = [], 0
    for (mul, ir), act in zip(activation.irreps_in, activation.acts):
        width = mul * ir.dim
        if out and _same_function(out[-1][2], act):
            start, merged, _ = out[-1]
            out[-1] = (start, merged + width, act)
        else:
            out.append((position, width, act))
        position += width
    return out


class FusedGate(Gate):
    """e3nn's gate (same irreps, activations, normalisation and state dict), fewer operations."""

    def __init__(self, irreps_scalars, act_scalars, irreps_gates, act_gates, irreps_gated):
        super().__init__(irreps_scalars, act_scalars, irreps_gates, act_gates, irreps_gated)
        extract = self.sc.cut
        scalars, gates, gated = (_columns(extract.irreps_in, blocks) for blocks in extract.instructions)
        self.register_buffer("scalar_columns", scalars, persistent=False)
        self.register_buffer("gate_columns", gates, persistent=False)
        self.register_buffer("gated_columns", gated, persistent=False)
        # The gated irreps' components, each with the index of its gate (one gate per irrep copy).
        gate_of_component = [copy for copy, ir in enumerate(ir for mul, ir in self.irreps_gated for _ in range(mul))
                             for _ in range(ir.dim)]
        self.register_buffer("gate_of_component", torch.tensor(gate_of_component, dtype=torch.long), persistent=False)
        self.scalar_blocks = _activation_blocks(self.act_scalars)
        self.gate_blocks = _activation_blocks(self.act_gates)

    @staticmethod
    def _activate(x: torch.Tensor, blocks: list[tuple[int, int, object]]) -> list[torch.Tensor]:
        parts = [x if width == x.shape[1] else x.narrow(1, start, width) for start, width, _ in blocks]
        return [part if act is None else act(part) for part, (_, _, act) in zip(parts, blocks)]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        parts = self._activate(features.index_select(1, self.scalar_columns), self.scalar_blocks)
        if len(self.gate_columns):
            gates = self._activate(features.index_select(1, self.gate_columns), self.gate_blocks)
            gates = gates[0] if len(gates) == 1 else torch.cat(gates, dim=1)
            gated = features.index_select(1, self.gated_columns) * gates.index_select(1, self.gate_of_component)
            parts.append(gated)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def build_gate(irreps_out: o3.Irreps) -> FusedGate:
    """Equivariant gate producing ``irreps_out``: scalars activated, l > 0 gated by extra 0e."""
    scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l == 0])
    gated = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l > 0])
    gate_irrep = "0e" if o3.Irrep("0e") in [ir for _, ir in scalars] else "0o"
    gates = o3.Irreps([(mul, gate_irrep) for mul, _ in gated])
    return FusedGate(
        scalars,
        [SCALAR_ACTIVATIONS[ir.p] for _, ir in scalars],
        gates,
        [GATE_ACTIVATIONS[ir.p] for _, ir in gates],
        gated,
    )
