"""The whole multi-task mechanism.

A model has shared parameters θC and task-specific parameters θT. Each module class declares the
:class:`ParameterRole` of its own parameters (``parameter_role``; none declared: shared), and
anything that must treat them apart (the selective penalty, optimizer groups, freezing, appending
a task, analysis) asks :func:`parameter_roles`:

* :class:`TaskEmbedding` — θT proper: a ``[n_tasks, n_scalars]`` table added to the scalar (0e)
  outputs of a linear layer. This is penalized by selective regularization. θT = 0 is the common
  potential-energy surface.
* :class:`TaskShift` — per-task, per-element energy references. Task specific but never
  penalized: functionals differ in absolute energies by design (references, not physics).
* The energy scale (``ModelConfig.scale_per_task``): shared by all tasks (:class:`EnergyScale`);
  the shared scale times exp(s_t) with s_t a task embedding (:class:`PenalizedTaskScale`: θT,
  penalized, dropped on the common channel); one scale per task set from the task's force RMS and
  never trained (:class:`FixedTaskEnergyScale`); or one trained scale per task
  (:class:`TaskEnergyScale`), the only task-specific parameter that is trained, outside θT and
  never penalized: it can carry one database's force magnitude into everything its task predicts,
  which is why the other three exist.
* :class:`LinearCorrection` (optional) — one scalar c_t per task multiplying the task's
  shift-free energy, 1 until trained: the linear correction of PES softening (fine-tuning with
  every other parameter frozen, ``train.freeze: all_but_linear_correction``).

:class:`TaskLinear` (shared linear + TaskEmbedding) is numerically the same as appending the
task one-hot to the input of the linear layer, as SevenNet-MF does.

Throughout, ``node_task`` is a LongTensor with each node's task index, or ``None`` for the
common channel (θT taken as zero).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator

import torch
from e3nn import o3
from torch import nn

from sevenomni.nn.linear import EquivariantLinear

# The task-specific parameters (by module name in SevenOmniModel) that selective regularization
# leaves alone, and why; every other trainable task-specific parameter is θT (a TaskEmbedding).
UNPENALIZED_TASK_PARAMETERS = {
    "energy_shift": "per-task, per-element energy references: methods differ in absolute energies by design",
    "energy_scale": "only with scale_per_task: true, the free per-task scale (see above); the other "
    "treatments share it, penalize its task part or fix it from statistics",
    "linear_correction": "one scalar per task for PES softening, trained alone (train.freeze: all_but_linear_correction)",
}


class ParameterRole(enum.Enum):
    """What a parameter is to the multi-task mechanism; a module class declares the role of its own
    parameters as ``parameter_role`` (one that declares none holds shared parameters).

    * ``SHARED``: θC (weight decay, the penalty of ``regularization.mode: all``);
    * ``SHARED_EXEMPT``: the shared energy scale, θC but an absolute reference that no penalty sees;
    * ``TASK_PENALIZED``: θT proper, the task embeddings (the selective penalty's parameters);
    * ``TASK_EXEMPT``: per-task energy shifts and scales and the linear correction, never penalized
      (:data:`UNPENALIZED_TASK_PARAMETERS` says why).

    Task-specific parameters have one row per task (a module holding them has ``append_task``) and
    train without weight decay.
    """

    SHARED = "shared"
    SHARED_EXEMPT = "shared_exempt"
    TASK_PENALIZED = "task_penalized"
    TASK_EXEMPT = "task_exempt"

    @property
    def task_specific(self) -> bool:
        return self in (ParameterRole.TASK_PENALIZED, ParameterRole.TASK_EXEMPT)

    @property
    def exempt(self) -> bool:
        """Whether no weight penalty ever sees it."""
        return self in (ParameterRole.SHARED_EXEMPT, ParameterRole.TASK_EXEMPT)


def role_of(module: nn.Module) -> ParameterRole:
    """The role of ``module``'s own parameters: its class's ``parameter_role``, else shared."""
    return getattr(module, "parameter_role", ParameterRole.SHARED)


def parameter_roles(model: nn.Module) -> Iterator[tuple[str, nn.Parameter, ParameterRole]]:
    """Every parameter of ``model`` once, as ``named_parameters`` gives them, with its role: the role
    of the module that holds it."""
    modules = dict(model.named_modules())
    for name, parameter in model.named_parameters():
        yield name, parameter, role_of(modules[name.rpartition(".")[0]])


class TaskEmbedding(nn.Module):
    """θT[l]: one learned vector per task, added to the ``dim`` scalar outputs of a layer."""

    parameter_role = ParameterRole.TASK_PENALIZED

    def __init__(self, num_tasks: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_tasks, dim))

    def forward(self, node_task: torch.Tensor) -> torch.Tensor:
        return self.weight[node_task]

    def append_task(self, like: int | None = None) -> None:
        # A new task starts on the common PES: its embedding row is zero.
        new_row = self.weight.new_zeros(1, self.weight.shape[1])
        self.weight = nn.Parameter(torch.cat([self.weight.detach(), new_row]))


class TaskShift(nn.Module):
    """shift[t, species]: per-task, per-element energy reference added to each atom."""

    parameter_role = ParameterRole.TASK_EXEMPT

    def __init__(self, num_tasks: int, num_species: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_tasks, num_species))

    def forward(self, species: torch.Tensor, node_task: torch.Tensor) -> torch.Tensor:
        return self.weight[node_task, species]

    def append_task(self, like: int | None = None) -> None:
        row = self.weight.new_zeros(1, self.weight.shape[1]) if like is None else self.weight[like : like + 1]
        self.weight = nn.Parameter(torch.cat([self.weight.detach(), row.detach()]))


class EnergyScale(nn.Module):
    """scale[t, species] multiplying the network's atomic energies.

    Per task (then task-specific) or shared by all tasks, per element or one value; the table
    always has shape [tasks or 1, species or 1] and is broadcast.
    """

    parameter_role = ParameterRole.SHARED_EXEMPT

    def __init__(self, num_tasks: int, num_species: int, per_element: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_tasks, num_species if per_element else 1))

    def forward(
        self, species: torch.Tensor, node_task: torch.Tensor, theta_task: torch.Tensor | None = None
    ) -> torch.Tensor:
        rows = node_task if self.weight.shape[0] > 1 else torch.zeros_like(node_task)
        columns = species if self.weight.shape[1] > 1 else torch.zeros_like(species)
        return self.weight[rows, columns]


class TaskEnergyScale(EnergyScale):
    """An energy scale with one row per task."""

    parameter_role = ParameterRole.TASK_EXEMPT

    def append_task(self, like: int | None = None) -> None:
        row = self.weight.new_ones(1, self.weight.shape[1]) if like is None else self.weight[like : like + 1]
        self.weight = nn.Parameter(torch.cat([self.weight.detach(), row.detach()]))


class FixedTaskEnergyScale(TaskEnergyScale):
    """One scale per task, set from statistics (each task's force RMS) and never trained."""

    def __init__(self, num_tasks: int, num_species: int, per_element: bool):
        super().__init__(num_tasks, num_species, per_element)
        self.weight.requires_grad_(False)

    def append_task(self, like: int | None = None) -> None:
        super().append_task(like)
        self.weight.requires_grad_(False)


class PenalizedTaskScale(EnergyScale):
    """scale[species] × exp(s_t): a shared scale, and per task a log-scale offset s_t that is θT.

    s_t lives in a :class:`TaskEmbedding` of width 1, so selective regularization penalizes it
    with the other task embeddings, ``sevenomni info`` and ``analyze embeddings`` show it (site
    ``energy_scale``), a new task starts at s_t = 0 (the shared scale), and the common channel
    (θT dropped) uses the shared scale alone.
    """

    def __init__(self, num_tasks: int, num_species: int, per_element: bool):
        super().__init__(1, num_species, per_element)
        self.embedding = TaskEmbedding(num_tasks, 1)

    def forward(
        self, species: torch.Tensor, node_task: torch.Tensor, theta_task: torch.Tensor | None = None
    ) -> torch.Tensor:
        scale = super().forward(species, node_task)
        if theta_task is None:
            return scale
        return scale * torch.exp(self.embedding(theta_task)[:, 0].to(scale.dtype))


class LinearCorrection(TaskEnergyScale):
    """c[t]: one scalar per task multiplying that task's shift-free energy (and so its forces and
    stress); initialized to 1, so a model is unchanged until the correction is trained."""

    def __init__(self, num_tasks: int):
        super().__init__(num_tasks, 1, per_element=False)


def scalar_indices(irreps: o3.Irreps) -> torch.Tensor:
    """Positions of the 0e components in a flat feature vector of ``irreps``."""
    indices = [
        torch.arange(s.start, s.stop)
        for (mul, ir), s in zip(irreps, irreps.slices())
        if ir == o3.Irrep("0e")
    ]
    return torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long)


class TaskLinear(nn.Module):
    """W_C · x + θT[task] on the 0e outputs; a plain shared linear map if ``num_tasks`` is 0.

    ``normalize`` (scale-invariant θT, ``ModelConfig.task_embedding_norm``): where θT is added, the
    0e outputs are then divided by their RMS over the channels of each atom, on every channel
    (the common PES included), so the shared weights cannot amplify θT's share by growing.
    """

    EPSILON = 1e-6

    def __init__(self, irreps_in: o3.Irreps, irreps_out: o3.Irreps, num_tasks: int, normalize: bool = False):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        self.linear = EquivariantLinear(self.irreps_in, self.irreps_out)
        self.register_buffer("scalar_index", scalar_indices(self.irreps_out), persistent=False)
        self.embedding = TaskEmbedding(num_tasks, len(self.scalar_index)) if num_tasks else None
        self.normalize = bool(normalize) and self.embedding is not None

    def forward(self, x: torch.Tensor, node_task: torch.Tensor | None) -> torch.Tensor:
        out = self.linear(x)
        if self.embedding is not None and node_task is not None:
            out = out.index_add(1, self.scalar_index, self.embedding(node_task).to(out.dtype))
        if self.normalize:
            scalars = out.index_select(1, self.scalar_index)
            rms = torch.sqrt(scalars.pow(2).mean(dim=1, keepdim=True) + self.EPSILON)
            out = out.index_copy(1, self.scalar_index, scalars / rms)
        return out
