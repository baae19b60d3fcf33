"""An equivariant linear map with e3nn's weights and normalisation, in a dozen tensor operations.

e3nn's :class:`~e3nn.o3.Linear` contracts each instruction's block on its own: a few operators per
block forward and more backward, ~70 forward and ~150 backward for the hidden features of a
128-channel, lmax-3 model, and those dominate a call's operator count on a GPU (each is a launch
and host time). :class:`EquivariantLinear` computes the same map on the same flat weight vector in
one batched matrix product:

* every block's channels are cut into *chunks* of ``g`` channels (``g`` the greatest common divisor
  of all multiplicities), and the input is read as *rows*: one chunk at one component of the irrep;
* each (instruction, input chunk, output chunk, component) is one *path*: a ``g × g`` piece of that
  instruction's weight matrix times the input row, added to the output row;
* one gather reads all the paths' input rows, one gather all their weight pieces (scaled by e3nn's
  path weight), one ``bmm`` multiplies them, one ``index_add`` sums paths into output rows, and one
  permutation returns the rows to e3nn's ``mul_ir`` layout.

Where the chunks would be small (``g`` below :data:`MIN_CHUNK`; e.g. a species one-hot of 3
elements into 128 channels) the instructions are contracted one by one instead, as e3nn does.

The parameters and buffers (``weight``, the empty ``bias``, ``output_mask``) and ``instructions``
are e3nn's, so state dicts and the SevenNet weight mapping are unchanged.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from e3nn.o3._linear import Instruction
from torch import nn

from sevenomni.nn.indexing import inverse_permutation

# Below this chunk width a batched product of g × g pieces is slower than one product per block.
MIN_CHUNK = 8


class EquivariantLinear(nn.Module):
    """``x ↦ o3.Linear(irreps_in, irreps_out)(x)`` with every input block connected to every output
    block of the same irrep, 'element' path normalisation, no biases (e3nn's defaults)."""

    def __init__(self, irreps_in: o3.Irreps, irreps_out: o3.Irreps):
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        pairs = [
            (i_in, i_out)
            for i_in, (_, ir_in) in enumerate(self.irreps_in)
            for i_out, (_, ir_out) in enumerate(self.irreps_out)
            if ir_in == ir_out
        ]
        fan_in = {
            i_out: sum(self.irreps_in[i_in].mul for i_in, o in pairs if o == i_out) for _, i_out in pairs
        }
        self.instructions = [
            Instruction(
                i_in=i_in,
                i_out=i_out,
                path_shape=(self.irreps_in[i_in].mul, self.irreps_out[i_out].mul),
                path_weight=fan_in[i_out] ** -0.5,
            )
            for i_in, i_out in pairs
        ]
        self.weight_numel = sum(a * b for a, b in (ins.path_shape for ins in self.instructions))
        self.weight = nn.Parameter(torch.randn(self.weight_numel))
        self.register_buffer("bias", torch.Tensor())
        fed = {ins.i_out for ins in self.instructions if 0 not in ins.path_shape}
        mask = [torch.full((mul * ir.dim,), float(i in fed)) for i, (mul, ir) in enumerate(self.irreps_out)]
        self.register_buffer("output_mask", torch.cat(mask) if mask else torch.ones(0))

        # The block-by-block form's plan, in plain numbers (no irreps objects in the forward).
        in_slices, position, self.blocks = self.irreps_in.slices(), 0, []
        for ins in self.instructions:
            (mul_in, mul_out), dim = ins.path_shape, self.irreps_in[ins.i_in].ir.dim
            self.blocks.append((position, mul_in, mul_out, dim, in_slices[ins.i_in].start, ins.i_out, ins.path_weight))
            position += mul_in * mul_out
        self.out_widths = [mul * ir.dim for mul, ir in self.irreps_out]
        muls = [mul for mul, _ in (*self.irreps_in, *self.irreps_out) if mul > 0]
        self.chunk = math.gcd(*muls) if muls else 1
        self.batched = self.chunk >= MIN_CHUNK and bool(self.instructions)
        if self.batched:
            self._plan_paths()

    # ------------------------------------------------------------------ the batched plan
    def _plan_paths(self) -> None:
        """Index tables of the batched form (see the module docstring); constants, not state."""
        g = self.chunk
        out_starts = [block.start for block in self.irreps_out.slices()]
        # Output rows: (block, chunk, component), each g channels; their columns in mul_ir order.
        out_row_of, out_columns = {}, []
        for i_out, (mul, ir) in enumerate(self.irreps_out):
            for chunk in range(mul // g):
                for m in range(ir.dim):
                    out_row_of[i_out, chunk, m] = len(out_row_of)
                    out_columns += [out_starts[i_out] + (chunk * g + c) * ir.dim + m for c in range(g)]
        input_columns, weight_index, scale, piece_of_path, row_of_path = [], [], [], [], []
        for position, mul_in, mul_out, dim, in_start, i_out, path_weight in self.blocks:
            block = torch.arange(position, position + mul_in * mul_out).view(mul_in, mul_out)
            for chunk_in in range(mul_in // g):
                for chunk_out in range(mul_out // g):
                    weight_index.append(block[chunk_in * g : (chunk_in + 1) * g, chunk_out * g : (chunk_out + 1) * g])
                    scale.append(path_weight)
                    for m in range(dim):
                        input_columns += [in_start + (chunk_in * g + c) * dim + m for c in range(g)]
                        piece_of_path.append(len(weight_index) - 1)
                        row_of_path.append(out_row_of[i_out, chunk_out, m])
        self.num_out_rows = len(out_row_of)
        self.register_buffer("input_columns", torch.tensor(input_columns, dtype=torch.long), persistent=False)
        self.register_buffer("weight_index", torch.stack(weight_index), persistent=False)
        self.register_buffer(
            "piece_scale", torch.tensor(scale, dtype=torch.get_default_dtype()).view(-1, 1, 1), persistent=False
        )
        self.register_buffer("piece_of_path", torch.tensor(piece_of_path, dtype=torch.long), persistent=False)
        self.register_buffer("row_of_path", torch.tensor(row_of_path, dtype=torch.long), persistent=False)
        self.register_buffer(
            "rows_to_mul_ir", inverse_permutation(torch.tensor(out_columns, dtype=torch.long)), persistent=False
        )

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.instructions:
            return x.new_zeros(x.shape[0], self.irreps_out.dim)
        return self._batched(x) if self.batched else self._blockwise(x)

    def _batched(self, x: torch.Tensor) -> torch.Tensor:
        g, n = self.chunk, x.shape[0]
        paths = x.index_select(1, self.input_columns).view(n, -1, g).transpose(0, 1)  # [paths, n, g]
        pieces = self.weight[self.weight_index] * self.piece_scale.to(x.dtype)  # [pieces, g, g]
        products = torch.bmm(paths, pieces.index_select(0, self.piece_of_path))  # [paths, n, g]
        rows = products.new_zeros(self.num_out_rows, n, g).index_add(0, self.row_of_path, products)
        return rows.transpose(0, 1).reshape(n, -1).index_select(1, self.rows_to_mul_ir)

    def _blockwise(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        outputs: list[torch.Tensor | None] = [None] * len(self.out_widths)
        for position, mul_in, mul_out, dim, start, i_out, path_weight in self.blocks:
            w = self.weight.narrow(0, position, mul_in * mul_out).view(mul_in, mul_out) * path_weight
            block = x.narrow(1, start, mul_in * dim)
            if dim == 1:
                y = block @ w
            else:
                y = torch.einsum("num,uw->nwm", block.view(n, mul_in, dim), w).reshape(n, mul_out * dim)
            outputs[i_out] = y if outputs[i_out] is None else outputs[i_out] + y
        pieces = [out if out is not None else x.new_zeros(n, width) for out, width in zip(outputs, self.out_widths)]
        return torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0]
