"""One ``split`` instead of many slices in e3nn's generated code: one gradient buffer per tensor.

e3nn's tensor products and linears cut their flat inputs and weights into blocks with slices
(``w[:, a:b]``). The backward of each slice allocates a zero-filled gradient of the whole tensor
and the autograd engine adds them up: for a convolution with 15 paths, 15 zero-filled
``[edges, weights]`` buffers per layer (the ``aten::fill_`` seen in profiles). ``split`` gives the
same views, but its backward concatenates the pieces' gradients into one buffer. The rewrite is
exact (the same values in the same places) and leaves any graph it does not recognise unchanged.
"""

from __future__ import annotations

import operator

import torch
from torch import fx

_FULL = slice(None, None, None)


def _column_slice(node: fx.Node) -> tuple[int, int] | None:
    """(start, stop) if ``node`` is ``x[:, start:stop]`` with constant bounds, else None."""
    if node.op != "call_function" or node.target is not operator.getitem:
        return None
    index = node.args[1]
    if not (isinstance(index, tuple) and len(index) == 2 and index[0] == _FULL and isinstance(index[1], slice)):
        return None
    part = index[1]
    if not (isinstance(part.start, int) and isinstance(part.stop, int) and part.step is None):
        return None
    return part.start, part.stop


def _width(node: fx.Node) -> int | None:
    """The constant number of columns of ``node`` when it is ``x.reshape(-1, width)``."""
    if node.op == "call_method" and node.target == "reshape" and len(node.args) == 3:
        rows, width = node.args[1], node.args[2]
        if rows == -1 and isinstance(width, int):
            return width
    return None


def split_column_slices(module: fx.GraphModule) -> int:
    """Replace the column slices of each ``reshape(-1, width)`` tensor by one split; returns how many."""
    graph, rewritten = module.graph, 0
    for source in list(graph.nodes):
        width = _width(source)
        if width is None:
            continue
        slices = [(user, _column_slice(user)) for user in source.users]
        slices = [(user, bounds) for user, bounds in slices if bounds is not None]
        if len(slices) < 2:
            continue
        cuts = sorted({0, width, *(b for _, bounds in slices for b in bounds)})
        if cuts[0] != 0 or cuts[-1] != width:
            continue
        sizes = [stop - start for start, stop in zip(cuts, cuts[1:])]
        if any(bounds[0] not in cuts or bounds[1] not in cuts for _, bounds in slices):
            continue
        with graph.inserting_after(source):
            pieces = graph.call_function(torch.split, (source, sizes), {"dim": 1})
        for user, (start, stop) in slices:
            first, last = cuts.index(start), cuts.index(stop)
            with graph.inserting_before(user):
                parts = [graph.call_function(operator.getitem, (pieces, k)) for k in range(first, last)]
                joined = parts[0] if len(parts) == 1 else graph.call_function(torch.cat, (parts,), {"dim": 1})
            user.replace_all_uses_with(joined)
            graph.erase_node(user)
            rewritten += 1
    if rewritten:
        graph.lint()
        module.recompile()
    return rewritten


def split_slices_in(module: torch.nn.Module) -> int:
    """Apply :func:`split_column_slices` to every fx graph module inside ``module``."""
    return sum(split_column_slices(m) for m in module.modules() if isinstance(m, fx.GraphModule))
