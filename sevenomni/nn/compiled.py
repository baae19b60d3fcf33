"""``torch.compile`` of the network (edge vectors → atomic energies), compiled once per process.

Only :meth:`~sevenomni.nn.SevenOmniModel.atomic_energies` is compiled: the geometry (positions,
strain) and the gradients that give forces and stress stay eager, and call the compiled backward.
One compiled function serves every model of a process (the model is an argument, its weights are
graph inputs), so a second calculator on the same or an equal-shaped model pays no compilation;
the sizes of the atom and edge axes are dynamic from the first call, so MD with a changing
neighbour count does not recompile. Inductor keeps the generated code in its on-disk cache
(``TORCHINDUCTOR_CACHE_DIR``), so a new process recompiles from cache, much faster than the first.

Force and stress *training* differentiates the forces again; ``torch.compile`` cannot do that
double backward, so such passes run eagerly (with a warning).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

DOUBLE_BACKWARD_FALLBACK = (
    "compiled model: training on forces or stress needs a double backward, which torch.compile does not "
    "support; this pass runs eagerly (inference and energy-only passes stay compiled)"
)
_compiled: Callable | None = None


def compiled_atomic_energies(model: torch.nn.Module) -> Callable[..., torch.Tensor]:
    """``model.atomic_energies`` through the process's one compiled function, axes marked dynamic."""
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(type(model).atomic_energies)

    def run(edge_vec, edge_index, species, node_task, theta_task):
        for tensor, dim in ((edge_vec, 0), (edge_index, 1), (species, 0), (node_task, 0)):
            torch._dynamo.maybe_mark_dynamic(tensor, dim)
        if theta_task is not None:
            torch._dynamo.maybe_mark_dynamic(theta_task, 0)
        return _compiled(model, edge_vec, edge_index, species, node_task, theta_task)

    return run
