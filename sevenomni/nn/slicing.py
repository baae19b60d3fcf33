"""Fewer zero-filled gradient buffers in e3nn's generated code: splits instead of slices.

e3nn's tensor products and linears cut their flat inputs and weights into blocks with slices
(``w[:, a:b]``). The backward of each slice allocates a zero-filled gradient of the whole tensor
and the autograd engine adds them up: for a convolution with 15 paths, 15 zero-filled
``[edges, weights]`` buffers per layer (the ``aten::fill_`` seen in profiles). ``split`` gives the
same views, but its backward concatenates the pieces' gradients into one buffer.

The same happens one order up in force training: the backward of e3nn's ``torch.cat`` (joining
the blocks of an output) slices the incoming gradient, and differentiating those slices again
zero-fills a whole buffer per block. :func:`cat` is ``torch.cat`` whose backward splits instead.

The rewrites are exact (the same values in the same places) and leave any graph they do not
recognise unchanged.
"""

from __future__ import annotations

import operator

import torch
from torch import fx

_FULL = slice(None, None, None)


def _column_slice(node: fx.Node) -> tuple[int, int] | None:
    """(start, stop) if ``node`` is ``x[:, start:stop]`` or ``x[..., start:stop]`` with constant bounds."""
    if node.op != "call_function" or node.target is not operator.getitem:
        return None
    index = node.args[1]
    if not (isinstance(index, tuple) and len(index) == 2 and index[0] in (_FULL, Ellipsis)):
        return None
    part = index[1]
    if not (isinstance(part, slice) and isinstance(part.start, int) and isinstance(part.stop, int)):
        return None
    return (part.start, part.stop) if part.step is None else None


def _width(node: fx.Node) -> int | None:
    """The constant number of columns of ``node`` when it is ``x.reshape(-1, width)``."""
    if node.op == "call_method" and node.target == "reshape" and len(node.args) == 3:
        rows, width = node.args[1], node.args[2]
        if rows == -1 and isinstance(width, int):
            return width
    return None


def split_column_slices(module: fx.GraphModule) -> int:
    """Replace the last-axis slices of each tensor by one split; returns how many slices were replaced.

    Two-dimensional ``[:, a:b]`` slices of a ``reshape(-1, width)`` (e3nn) and ``[..., a:b]``
    slices of any tensor (cuEquivariance's fallback) qualify; the columns after the last slice
    become one more piece, sized at run time where the width is not a constant.
    """
    graph, rewritten = module.graph, 0
    order = {node: position for position, node in enumerate(graph.nodes)}
    for source in list(graph.nodes):
        slices = [(user, _column_slice(user)) for user in source.users]
        slices = sorted(((u, b) for u, b in slices if b is not None), key=lambda item: order[item[0]])
        width = _width(source)
        kinds = {user.args[1][0] is Ellipsis for user, _ in slices}
        if len(slices) < 2 or len(kinds) != 1 or (width is None) != kinds.pop():
            continue
        cuts = sorted({0, *(b for _, bounds in slices for b in bounds)})
        if width is not None and cuts[-1] > width:
            continue
        sizes: list = [stop - start for start, stop in zip(cuts, cuts[1:])]
        with graph.inserting_before(slices[0][0]):
            if width is None:
                columns = graph.call_function(operator.getitem, (graph.call_function(getattr, (source, "shape")), -1))
                sizes.append(graph.call_function(operator.sub, (columns, cuts[-1])))
            elif width > cuts[-1]:
                sizes.append(width - cuts[-1])
            pieces = graph.call_function(torch.split, (source, sizes), {"dim": -1})
        for user, (start, stop) in slices:
            first, last = cuts.index(start), cuts.index(stop)
            with graph.inserting_before(user):
                parts = [graph.call_function(operator.getitem, (pieces, k)) for k in range(first, last)]
                joined = parts[0] if len(parts) == 1 else graph.call_function(torch.cat, (parts,), {"dim": -1})
            user.replace_all_uses_with(joined)
            graph.erase_node(user)
            rewritten += 1
    if rewritten:
        graph.lint()
        module.recompile()
    return rewritten


class _Cat(torch.autograd.Function):
    """``torch.cat`` whose backward is a ``split`` (itself differentiable, with a one-buffer backward)."""

    @staticmethod
    def forward(ctx, dim: int, *tensors: torch.Tensor) -> torch.Tensor:
        ctx.dim, ctx.sizes = dim, [t.shape[dim] for t in tensors]
        return torch.cat(tensors, dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return (None, *grad.split(ctx.sizes, ctx.dim))


def cat(tensors: list[torch.Tensor] | tuple[torch.Tensor, ...], dim: int = 0) -> torch.Tensor:
    """``torch.cat(tensors, dim)``; its gradient of a gradient fills one buffer, not one per piece."""
    return _Cat.apply(dim, *tensors)


def split_cat_backward(module: fx.GraphModule) -> int:
    """Route every ``torch.cat`` of ``module`` through :func:`cat`; returns how many."""
    rewritten = 0
    for node in module.graph.nodes:
        if node.op == "call_function" and node.target is torch.cat:
            node.target = cat
            rewritten += 1
    if rewritten:
        module.recompile()
    return rewritten


def split_slices_in(module: torch.nn.Module) -> int:
    """Apply :func:`split_column_slices` and :func:`split_cat_backward` to every fx graph module inside ``module``."""
    graphs = [m for m in module.modules() if isinstance(m, fx.GraphModule)]
    return sum(split_column_slices(m) + split_cat_backward(m) for m in graphs)
