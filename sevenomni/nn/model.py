"""The multi-task equivariant potential f(G; θC, θT) with energy, forces and stress."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import torch
from ase.data import chemical_symbols
from e3nn import o3
from torch import nn

from sevenomni.core.base import MIN_CELL_VOLUME
from sevenomni.core.baseline import BaselineSpec
from sevenomni.core.keys import ATOMIC_ENERGIES, BATCH, ENERGY, FORCES, SPECIES, STRESS, TASK
from sevenomni.nn.backend import check_backend
from sevenomni.nn.compiled import DOUBLE_BACKWARD_FALLBACK, compiled_atomic_energies
from sevenomni.nn.config import ModelConfig, element_symbols
from sevenomni.nn.interaction import Interaction
from sevenomni.nn.linear import EquivariantLinear
from sevenomni.nn.radial import BesselBasis, PolynomialCutoff, XPLORCutoff
from sevenomni.nn.slicing import split_slices_in
from sevenomni.nn.task import (
    EnergyScale,
    FixedTaskEnergyScale,
    LinearCorrection,
    ParameterRole,
    PenalizedTaskScale,
    TaskEnergyScale,
    TaskLinear,
    TaskShift,
    parameter_roles,
    role_of,
)
from sevenomni.nn.task_names import Tasks, is_common

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def feature_irreps(channels: int, lmax: int, parity: str) -> o3.Irreps:
    """Hidden node features: even scalars, then every 1 ≤ l ≤ lmax (both parities for O(3))."""
    parities = (1, -1) if parity == "o3" else (1,)
    irreps = [(channels, (0, 1))] + [(channels, (l, p)) for l in range(1, lmax + 1) for p in parities]
    return o3.Irreps(irreps).sort().irreps


def sh_irreps(lmax: int, parity: str) -> o3.Irreps:
    return o3.Irreps.spherical_harmonics(lmax, p=-1 if parity == "o3" else 1)


def energy_scale(treatment: bool | str, num_tasks: int, num_species: int, per_element: bool) -> EnergyScale:
    """The energy-scale module for ``ModelConfig.scale_per_task`` (see :mod:`sevenomni.nn.task`)."""
    if treatment is False:
        return EnergyScale(1, num_species, per_element)
    if treatment == "penalized":
        return PenalizedTaskScale(num_tasks, num_species, per_element)
    if treatment == "fixed":
        return FixedTaskEnergyScale(num_tasks, num_species, per_element)
    return TaskEnergyScale(num_tasks, num_species, per_element)


class SevenOmniModel(nn.Module):
    """Per-atom energies from a stack of interaction layers; E = Σ_i scale[t]·e_i + shift[t, Z_i].

    ``forward`` takes a (batched) graph from :mod:`sevenomni.data.graph` with a per-graph
    ``task`` index and returns ``energy`` [B], ``atomic_energies`` [N] and, on request,
    ``forces`` [N, 3] (-dE/dr) and ``stress`` [B, 3, 3] (1/V · dE/dε, ASE sign, eV/Å³; zero for
    a cell without volume).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        dtype = DTYPES[config.dtype]
        previous_default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            self._build(config)
        finally:
            torch.set_default_dtype(previous_default)
        split_slices_in(self)
        self.to(dtype)
        self.set_tp_backend(config.tp_backend)
        self.compiled = False

    def _build(self, config: ModelConfig) -> None:
        num_species, num_tasks = len(config.elements), len(config.tasks)
        species_of_z = torch.full((len(chemical_symbols),), -1, dtype=torch.long)
        species_of_z[torch.tensor(config.atomic_numbers)] = torch.arange(num_species)
        self.register_buffer("species_of_z", species_of_z, persistent=False)

        self.radial_basis = BesselBasis(config.cutoff, config.num_radial, config.radial_trainable)
        if config.envelope == "polynomial":
            self.envelope = PolynomialCutoff(config.cutoff, config.polynomial_p)
        else:
            self.envelope = XPLORCutoff(config.cutoff, config.xplor_on)
        irreps_sh = sh_irreps(config.lmax, config.parity)
        self.spherical_harmonics = o3.SphericalHarmonics(
            irreps_sh, normalize=config.sh_normalize, normalization="component"
        )

        irreps_species = o3.Irreps(f"{num_species}x0e")
        scalars = o3.Irreps(f"{config.channels}x0e")
        self.species_embedding = EquivariantLinear(irreps_species, scalars)

        if config.hidden_irreps is not None:
            hidden = o3.Irreps(config.hidden_irreps)
        else:
            hidden = feature_irreps(config.channels, config.lmax, config.parity)
        sites = set(config.task_embedding_sites)
        layers, irreps = [], scalars
        for index, denominator in enumerate(config.denominators):
            wanted = scalars if index == config.num_layers - 1 else hidden
            layer = Interaction(
                irreps,
                irreps_sh,
                irreps_species,
                wanted,
                num_tasks_si1=num_tasks if "si1" in sites else 0,
                num_tasks_si2=num_tasks if "si2" in sites else 0,
                normalize_task_scalars=config.task_embedding_norm,
                num_radial=config.num_radial,
                radial_mlp=config.radial_mlp,
                denominator=denominator,
                self_connection=config.self_connection,
            )
            layers.append(layer)
            irreps = layer.irreps_out
        self.layers = nn.ModuleList(layers)

        readout_irreps = o3.Irreps(f"{config.readout_width}x0e")
        self.readout_hidden = TaskLinear(
            irreps, readout_irreps, num_tasks if "readout" in sites else 0, config.task_embedding_norm
        )
        self.readout_energy = EquivariantLinear(readout_irreps, o3.Irreps("1x0e"))
        self.energy_shift = TaskShift(num_tasks, num_species)
        self.energy_scale = energy_scale(config.scale_per_task, num_tasks, num_species, config.scale_per_element)
        self.linear_correction = LinearCorrection(num_tasks) if config.linear_correction else None

    def set_tp_backend(self, backend: str) -> SevenOmniModel:
        """Compute the convolutions with ``backend`` (``e3nn``, ``cueq``, ``auto``); the weights stay as they are."""
        check_backend(backend)
        for layer in self.layers:
            layer.conv.set_backend(backend)
        self.config = self.config.model_copy(update={"tp_backend": backend})
        return self

    def set_radial_precision(self, precision: str) -> SevenOmniModel:
        """Run the radial networks in ``precision``: "model" (the model's dtype) or "bfloat16" (autocast
        around them only); tensor products and everything else keep the model's dtype. Weights unchanged."""
        choices = {"model": None, "bfloat16": torch.bfloat16}
        if precision not in choices:
            raise ValueError(f"radial precision {precision!r}: choose one of {', '.join(choices)}")
        for layer in self.layers:
            layer.conv.set_radial_dtype(choices[precision])
        return self

    # ------------------------------------------------------------------ parameters by role
    @property
    def tasks(self) -> list[str]:
        return Tasks(self.config.tasks)

    @property
    def elements(self) -> list[str]:
        return list(self.config.elements)

    @property
    def cutoff(self) -> float:
        return self.config.cutoff

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.config.dtype]

    def _named_parameters_where(self, wanted: Callable[[ParameterRole], bool]) -> Iterator[tuple[str, nn.Parameter]]:
        return ((name, parameter) for name, parameter, role in parameter_roles(self) if wanted(role))

    def task_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """θT in the broad sense: task embeddings and per-task shifts (and scales)."""
        return self._named_parameters_where(lambda role: role.task_specific)

    def task_embedding_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """θT proper: the task-embedding tables (what selective regularization penalizes)."""
        return self._named_parameters_where(lambda role: role is ParameterRole.TASK_PENALIZED)

    def energy_reference_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """The per-element energy shifts, the energy scales and the linear correction: never penalized."""
        return self._named_parameters_where(lambda role: role.exempt)

    def shared_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """θC: every parameter that is not task-specific."""
        return self._named_parameters_where(lambda role: not role.task_specific)

    def task_index(self, task: str) -> int:
        """Index of a task name (case-insensitive); ValueError listing the valid names."""
        return self.tasks.index(task)

    def resolve_channel(self, task: str | None, shift_from: str | None = None) -> tuple[int, bool]:
        """Map a channel name to (task index for shift/scale, whether θT is dropped).

        ``task=None`` is allowed only for a single-task model. ``task="common"`` is the common
        PES (θT = 0) with the shift and scale of ``shift_from`` (the only task if there is one);
        ``shift_from`` with any other channel is an error (a task channel has its own shifts).
        """
        index = None if task is None else self.tasks.channel(task)
        common = task is not None and index is None
        if shift_from is not None and not common:
            raise ValueError(
                f"shift_task {shift_from!r} goes only with the 'common' channel; "
                "a task's own channel uses its own shift and scale"
            )
        if common:
            if shift_from is None and len(self.tasks) > 1:
                raise ValueError(
                    f"the common channel needs the task whose shift/scale to use; one of {self.tasks}"
                )
            return self.task_index(shift_from or self.tasks[0]), True
        if index is None:
            if len(self.tasks) > 1:
                raise ValueError(f"this model has several tasks; choose one of {self.tasks} or 'common'")
            return 0, False
        return index, False

    def attach_species(self, graph, atomic_numbers: torch.Tensor | None = None):
        """Give ``graph`` its species indices, checked on the host (from ``atomic_numbers`` there, for
        a graph already on a GPU): a forward then reads them instead of checking the atomic numbers
        on the device (a host-device sync)."""
        numbers = graph.atomic_numbers if atomic_numbers is None else atomic_numbers
        graph.species = self.species(numbers).to(graph.pos.device)
        return graph

    def species_of(self, graph) -> torch.Tensor:
        """The species of ``graph``'s atoms: those :meth:`attach_species` checked, else checked now."""
        species = getattr(graph, SPECIES, None)
        return species if species is not None else self.species(graph.atomic_numbers)

    def species(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """Species indices; ValueError naming any element the model does not know."""
        if int(atomic_numbers.min()) < 1 or int(atomic_numbers.max()) >= len(chemical_symbols):
            raise ValueError(f"atomic numbers out of range: {atomic_numbers.unique().tolist()}")
        species = self.species_of_z[atomic_numbers]
        if bool((species < 0).any()):
            unknown = sorted({chemical_symbols[int(z)] for z in atomic_numbers[species < 0]})
            raise ValueError(f"element(s) {unknown} not in this model's elements {self.elements}")
        return species

    # ------------------------------------------------------------------ forward
    def atomic_energies(
        self,
        edge_vec: torch.Tensor,
        edge_index: torch.Tensor,
        species: torch.Tensor,
        node_task: torch.Tensor,
        theta_task: torch.Tensor | None,
    ) -> torch.Tensor:
        """The network: edge vectors → energy of each atom (``theta_task=None``: θT dropped)."""
        x = self.node_features(edge_vec, edge_index, species, theta_task)
        atomic = self.readout_energy(self.readout_hidden(x, theta_task)).squeeze(-1)
        scale = self.energy_scale(species, node_task, theta_task)
        if self.linear_correction is not None:
            scale = scale * self.linear_correction(species, node_task)
        return scale * atomic + self.energy_shift(species, node_task)

    def baseline_of(self, task: str) -> BaselineSpec | None:
        """The Δ-learning baseline ``task``'s channel is trained on top of (None: it predicts the reference)."""
        canonical = self.tasks.canonical(task)
        return self.config.baselines.get(canonical)

    def set_baseline(self, task: str, baseline: BaselineSpec | None) -> None:
        """Record that ``task`` learns reference − ``baseline`` (its predictions need the baseline added)."""
        baselines = dict(self.config.baselines)
        baselines.pop(self.tasks.canonical(task), None)
        if baseline is not None:
            baselines[self.tasks.canonical(task)] = baseline
        self.config = self.config.model_copy(update={"baselines": baselines})

    def task_elements(self, task: str) -> list[str] | None:
        """The elements ``task`` was trained on (None: not recorded, as in models from before the record)."""
        return (self.config.task_elements or {}).get(self.tasks.canonical(task))

    def record_task_elements(self, task: str, elements: list[str]) -> None:
        """Add ``elements`` to those ``task`` was trained on (``ModelConfig.task_elements``)."""
        recorded = dict(self.config.task_elements or {})
        canonical = self.tasks.canonical(task)
        recorded[canonical] = element_symbols(sorted({*recorded.get(canonical, []), *elements}))
        self.config = self.config.model_copy(update={"task_elements": recorded})

    def enable_linear_correction(self) -> SevenOmniModel:
        """Give the model its per-task linear correction (all 1: predictions unchanged), if it has none."""
        if self.linear_correction is None:
            reference = self.energy_scale.weight
            self.linear_correction = LinearCorrection(len(self.tasks)).to(reference.device, reference.dtype)
            self.config = self.config.model_copy(update={"linear_correction": True})
        return self

    def node_features(
        self, edge_vec: torch.Tensor, edge_index: torch.Tensor, species: torch.Tensor, theta_task: torch.Tensor | None
    ) -> torch.Tensor:
        """The interaction layers' output: ``channels`` invariant (0e) features per atom."""
        edge_len = edge_vec.norm(dim=-1)
        edge_radial = self.radial_basis(edge_len) * self.envelope(edge_len).unsqueeze(-1)
        edge_sh = self.spherical_harmonics(edge_vec)
        species_onehot = torch.nn.functional.one_hot(species, len(self.elements)).to(edge_vec.dtype)
        x = self.species_embedding(species_onehot)
        for layer in self.layers:
            x = layer(x, species_onehot, edge_index, edge_sh, edge_radial, theta_task)
        return x

    @torch.no_grad()
    def invariant_features(self, graph) -> torch.Tensor:
        """Per atom of a batched graph, the last layer's invariant features on the common PES (θT = 0)."""
        positions = graph.pos.detach().to(torch.float64)
        cell = graph.cell.to(torch.float64).view(-1, 3, 3)
        edge_vec = self._edge_vectors(graph, positions, cell, self._graph_of_atoms(graph))
        return self.node_features(edge_vec, graph.edge_index, self.species_of(graph), None)

    def _graph_of_atoms(self, graph) -> torch.Tensor:
        if getattr(graph, BATCH, None) is not None:
            return graph.batch
        return graph.pos.new_zeros(graph.pos.shape[0], dtype=torch.long)

    def _edge_vectors(self, graph, positions: torch.Tensor, cell: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """r_j − r_i + S·cell per edge, in float64 from the (possibly strained) geometry, then in the model's dtype."""
        sender, receiver = graph.edge_index
        lattice_offset = torch.bmm(graph.cell_shift.to(torch.float64).unsqueeze(1), cell[batch[receiver]]).squeeze(1)
        return (positions[sender] - positions[receiver] + lattice_offset).to(self.dtype)

    def set_compiled(self, compiled: bool = True) -> SevenOmniModel:
        """Run :meth:`atomic_energies` through ``torch.compile`` (see :mod:`sevenomni.nn.compiled`)."""
        self.compiled = bool(compiled)
        return self

    def forward(
        self,
        graph,
        common: bool = False,
        compute_forces: bool = True,
        compute_stress: bool = True,
        create_graph: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """Evaluate a batched graph. ``common=True`` drops θT (the common PES)."""
        dtype = self.dtype
        batch = self._graph_of_atoms(graph)
        num_graphs = graph.cell.shape[0]
        species = self.species_of(graph)
        graph_task = getattr(graph, TASK, None)
        if graph_task is None:
            if len(self.tasks) > 1:
                raise ValueError(f"graph has no task index; this model's tasks are {self.tasks}")
            graph_task = torch.zeros(num_graphs, dtype=torch.long, device=graph.pos.device)
        node_task = graph_task.view(-1)[batch]

        # Geometry in float64 (precise edge vectors even for large coordinates), network in dtype.
        positions = graph.pos.detach().to(torch.float64)  # never mark the caller's tensor as requiring grad
        cell = graph.cell.to(torch.float64).view(num_graphs, 3, 3)
        inputs = []
        if compute_forces:
            positions.requires_grad_(True)
            inputs.append(positions)
        if compute_stress:
            strain = torch.zeros(num_graphs, 3, 3, dtype=dtype, device=cell.device, requires_grad=True)
            symmetric = 0.5 * (strain + strain.transpose(1, 2)).to(torch.float64)
            positions = positions + torch.bmm(positions.unsqueeze(1), symmetric[batch]).squeeze(1)
            cell = cell + torch.bmm(cell, symmetric)
            inputs.append(strain)

        edge_vec = self._edge_vectors(graph, positions, cell, batch)

        if create_graph is None:
            create_graph = self.training
        network = self.atomic_energies
        if self.compiled:
            if create_graph and inputs:
                warnings.warn(DOUBLE_BACKWARD_FALLBACK, stacklevel=2)
            else:
                network = compiled_atomic_energies(self)
        atomic = network(edge_vec, graph.edge_index, species, node_task, None if common else node_task)
        energy = atomic.new_zeros(num_graphs).index_add(0, batch, atomic)
        out = {ENERGY: energy, ATOMIC_ENERGIES: atomic}

        if inputs:
            grads = torch.autograd.grad(
                energy.sum(), inputs, create_graph=create_graph, allow_unused=True
            )
            grads = [g if g is not None else torch.zeros_like(t) for g, t in zip(grads, inputs)]
            if compute_forces:
                out[FORCES] = -grads[0]
            if compute_stress:
                volume = torch.linalg.det(graph.cell.to(dtype).view(num_graphs, 3, 3)).abs()
                has_volume = volume > MIN_CELL_VOLUME
                safe_volume = torch.where(has_volume, volume, torch.ones_like(volume))
                out[STRESS] = grads[-1] / safe_volume.view(-1, 1, 1) * has_volume.view(-1, 1, 1)
        return out

    # ------------------------------------------------------------------ tasks
    def append_task(self, name: str, like: str | None = None) -> None:
        """Add a task channel; existing channels are unchanged, the new one starts on the common PES."""
        if is_common(name) or name in self.tasks:
            raise ValueError(f"task {name!r} is reserved or exists already ({self.tasks})")
        like_index = self.task_index(like) if like is not None else None
        for module in self.modules():
            if role_of(module).task_specific:
                module.append_task(like_index)
        self.config = self.config.model_copy(update={"tasks": [*self.tasks, name]})
