"""The weight mapping between a SevenNet state dict and a sevenomni model of the same architecture:
one :class:`WeightLink` per SevenNet weight, with its conversions both ways (read forwards by the
import, backwards by the export). Linears are converted through their effective (normalised)
matrices, so that SevenNet's and sevenomni's layouts and normalisations give the same model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from e3nn import o3

from sevenomni.model_io.checkpoint import CheckpointError
from sevenomni.model_io.sevenn.config import (
    checkpoint_elements,
    checkpoint_version,
    config_option,
    sevenn_layer_irreps,
    tensor_product_irreps,
)
from sevenomni.nn import SevenOmniModel


def _channel_offsets(irreps: o3.Irreps) -> list[int]:
    """For each entry, the index of its first channel among all channels of the same irrep."""
    seen: dict[o3.Irrep, int] = {}
    offsets = []
    for mul, ir in irreps:
        offsets.append(seen.get(ir, 0))
        seen[ir] = seen.get(ir, 0) + mul
    return offsets


# One block of an e3nn ``o3.Linear``'s flat weight: its irrep, the rows (input channels) and columns
# (output channels) of that irrep's effective matrix it fills, and the factor (path weight) that
# turns stored weights into effective ones.
_Block = tuple[o3.Irrep, slice, slice, float]


def _sevenn_linear_blocks(irreps_in: o3.Irreps, irreps_out: o3.Irreps) -> list[_Block]:
    """SevenNet's ``IrrepsLinear`` layout: every input entry to every output entry of the same irrep,
    input-major, each divided by the square root of its output's fan-in ('element' normalisation)."""
    in_offsets, out_offsets = _channel_offsets(irreps_in), _channel_offsets(irreps_out)
    fan_in = {i_out: sum(m for m, ir in irreps_in if ir == ir_out) for i_out, (_, ir_out) in enumerate(irreps_out)}
    blocks = []
    for i_in, (mul_in, ir_in) in enumerate(irreps_in):
        for i_out, (mul_out, ir_out) in enumerate(irreps_out):
            if ir_in == ir_out:
                rows = slice(in_offsets[i_in], in_offsets[i_in] + mul_in)
                cols = slice(out_offsets[i_out], out_offsets[i_out] + mul_out)
                blocks.append((ir_in, rows, cols, 1.0 / math.sqrt(fan_in[i_out])))
    return blocks


def _our_linear_blocks(linear: o3.Linear) -> list[_Block]:
    """The layout of sevenomni's ``o3.Linear``, read from its instructions."""
    in_offsets, out_offsets = _channel_offsets(linear.irreps_in), _channel_offsets(linear.irreps_out)
    blocks = []
    for ins in linear.instructions:
        mul_in, mul_out = ins.path_shape
        rows = slice(in_offsets[ins.i_in], in_offsets[ins.i_in] + mul_in)
        cols = slice(out_offsets[ins.i_out], out_offsets[ins.i_out] + mul_out)
        blocks.append((linear.irreps_in[ins.i_in].ir, rows, cols, float(ins.path_weight)))
    return blocks


def _blocks_to_matrices(
    blocks: list[_Block], irreps_in: o3.Irreps, irreps_out: o3.Irreps, weight: torch.Tensor, what: str
) -> dict[o3.Irrep, torch.Tensor]:
    """A flat linear weight as effective matrices, one per irrep: [in channels, out channels]."""
    weight = weight.reshape(-1).to(torch.float64)
    sizes: dict[o3.Irrep, list[int]] = {}
    for mul, ir in irreps_in:
        sizes.setdefault(ir, [0, 0])[0] += mul
    for mul, ir in irreps_out:
        sizes.setdefault(ir, [0, 0])[1] += mul
    matrices = {
        ir: torch.zeros(n_in, n_out, dtype=torch.float64) for ir, (n_in, n_out) in sizes.items() if n_in and n_out
    }
    position = 0
    for ir, rows, cols, factor in blocks:
        shape = (rows.stop - rows.start, cols.stop - cols.start)
        size = shape[0] * shape[1]
        if position + size <= weight.numel():
            matrices[ir][rows, cols] = weight[position : position + size].view(shape) * factor
        position += size
    if position != weight.numel():
        raise CheckpointError(f"{what}: a linear {irreps_in} -> {irreps_out} has {weight.numel()} weights, expected {position}")
    return matrices


def _matrices_to_blocks(blocks: list[_Block], matrices: dict[o3.Irrep, torch.Tensor], what: str) -> torch.Tensor:
    """The flat weight of a linear with layout ``blocks`` reproducing the effective ``matrices`` exactly."""
    flat, covered = [], set()
    for ir, rows, cols, factor in blocks:
        if ir not in matrices:
            raise CheckpointError(f"{what}: the source has no {ir} path that the target layer needs")
        flat.append((matrices[ir][rows, cols] / factor).reshape(-1))
        covered.add(ir)
    for ir, matrix in matrices.items():
        if ir not in covered and bool(matrix.ne(0).any()):
            raise CheckpointError(f"{what}: the source has {ir} weights that the target layer cannot hold")
    return torch.cat(flat) if flat else torch.zeros(0, dtype=torch.float64)


def _effective_linear(irreps_in: o3.Irreps, irreps_out: o3.Irreps, weight: torch.Tensor, what: str):
    """SevenNet linear weight → effective matrices."""
    return _blocks_to_matrices(_sevenn_linear_blocks(irreps_in, irreps_out), irreps_in, irreps_out, weight, what)


def _sevenn_linear_weight(irreps_in: o3.Irreps, irreps_out: o3.Irreps, matrices, what: str) -> torch.Tensor:
    """Effective matrices → SevenNet linear weight."""
    return _matrices_to_blocks(_sevenn_linear_blocks(irreps_in, irreps_out), matrices, what)


def _our_matrices(linear: o3.Linear, weight: torch.Tensor, what: str):
    """sevenomni linear weight → effective matrices."""
    return _blocks_to_matrices(_our_linear_blocks(linear), linear.irreps_in, linear.irreps_out, weight, what)


def _linear_weight(linear: o3.Linear, matrices, what: str) -> torch.Tensor:
    """Effective matrices → sevenomni linear weight."""
    return _matrices_to_blocks(_our_linear_blocks(linear), matrices, what)


_SCALAR = o3.Irrep("0e")


@dataclass(frozen=True)
class WeightLink:
    """One SevenNet state-dict entry and the sevenomni entries it corresponds to, with the
    conversions both ways: ``to_ours(theirs)`` → our tensors (in ``ours`` order);
    ``to_theirs(ours, template)`` → the SevenNet tensor, ``template`` being the entry of the
    SevenNet checkpoint the mapping was built on (it supplies what sevenomni does not hold, such as
    the rows of a dummy element)."""

    theirs: str
    ours: tuple[str, ...]
    to_ours: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
    to_theirs: Callable[[tuple[torch.Tensor, ...], torch.Tensor], torch.Tensor]


class _Links:
    """Builds the table of :class:`WeightLink` between a SevenNet config (and the state dict it
    came with) and a sevenomni model: the single description of the weight mapping, read forwards
    by the import and backwards by the export."""

    def __init__(self, model: SevenOmniModel, config: dict, state_dict: dict[str, torch.Tensor]):
        self.model = model
        self.config = config
        self.source = state_dict
        self.links: list[WeightLink] = []
        _, type_map = checkpoint_elements(config)
        self.num_species_sevenn = len(type_map)
        unknown = [s for s, z in zip(model.elements, model.config.atomic_numbers) if z not in type_map]
        if unknown:
            raise CheckpointError(f"elements {unknown} are not in the SevenNet model's type map")
        # Row of SevenNet's (alphabetical) one-hot for each of our (atomic-number-ordered) species.
        self.species_rows = torch.tensor([type_map[z] for z in model.config.atomic_numbers])
        modal = bool(config_option(config, "use_modality", False))
        self.num_modal = len(config["_modal_map"]) if modal else 0

    def add(self, theirs: str, ours: tuple[str, ...] | str, to_ours, to_theirs) -> None:
        self.links.append(WeightLink(theirs, (ours,) if isinstance(ours, str) else ours, to_ours, to_theirs))

    def same(self, theirs: str, ours: str) -> None:
        self.add(theirs, ours, lambda t: (t,), lambda o, _: o[0])

    # --- the pieces -------------------------------------------------------------------------
    def linear(self, ours: str, theirs: str, linear: o3.Linear) -> None:
        """A SevenNet IrrepsLinear ↔ a plain sevenomni linear with the same irreps."""
        irreps_in, irreps_out = linear.irreps_in, linear.irreps_out
        self.add(
            f"{theirs}.linear.weight",
            f"{ours}.weight",
            lambda t: (_linear_weight(linear, _effective_linear(irreps_in, irreps_out, t, theirs), theirs),),
            lambda o, _: _sevenn_linear_weight(irreps_in, irreps_out, _our_matrices(linear, o[0], ours), theirs),
        )

    def task_linear(self, ours: str, theirs: str, task_linear, with_modal: bool) -> None:
        """A SevenNet IrrepsLinear (optionally with the modal one-hot appended) ↔ TaskLinear."""
        if (task_linear.embedding is None) == with_modal:
            raise CheckpointError(f"{theirs}: modal one-hot use does not match sevenomni's task-embedding sites")
        linear = task_linear.linear
        if not with_modal:
            self.linear(f"{ours}.linear", theirs, linear)
            return
        irreps_in = task_linear.irreps_in + o3.Irreps(f"{self.num_modal}x0e")
        irreps_out = task_linear.irreps_out
        base = sum(mul for mul, ir in task_linear.irreps_in if ir == _SCALAR)

        def to_ours(weight):
            matrices = _effective_linear(irreps_in, irreps_out, weight, theirs)
            theta = matrices[_SCALAR][base:].clone()
            matrices[_SCALAR] = matrices[_SCALAR][:base]
            return _linear_weight(linear, matrices, theirs), theta

        def to_theirs(values, _):
            matrices = _our_matrices(linear, values[0], ours)
            theta = values[1].to(torch.float64).reshape(self.num_modal, -1)
            matrices[_SCALAR] = torch.cat([matrices[_SCALAR], theta])
            return _sevenn_linear_weight(irreps_in, irreps_out, matrices, theirs)

        self.add(f"{theirs}.linear.weight", (f"{ours}.linear.weight", f"{ours}.embedding.weight"), to_ours, to_theirs)

    def species_embedding(self) -> None:
        linear = self.model.species_embedding
        onehot = o3.Irreps(f"{self.num_species_sevenn}x0e")
        theirs = "onehot_to_feature_x"

        def to_ours(weight):
            matrices = _effective_linear(onehot, linear.irreps_out, weight, theirs)
            matrices[_SCALAR] = matrices[_SCALAR][self.species_rows]
            return (_linear_weight(linear, matrices, theirs),)

        def to_theirs(values, template):
            matrices = _effective_linear(onehot, linear.irreps_out, template, theirs)  # keeps rows we lack
            matrices[_SCALAR][self.species_rows] = _our_matrices(linear, values[0], "species_embedding")[_SCALAR]
            return _sevenn_linear_weight(onehot, linear.irreps_out, matrices, theirs)

        self.add(f"{theirs}.linear.weight", "species_embedding.weight", to_ours, to_theirs)

    def species_self_connection(self, ours: str, theirs: str, tp: o3.FullyConnectedTensorProduct) -> None:
        n_ours, n_theirs = len(self.species_rows), self.num_species_sevenn
        # Path weights scale as 1/sqrt(fan-in) and the fan-in is proportional to the species count.
        rescale = math.sqrt(n_ours / n_theirs)
        shapes = []
        for ins in tp.instructions:
            mul1, mul2, mul_out = ins.path_shape
            if mul2 != n_ours:
                raise CheckpointError(f"{theirs}: unexpected species self-connection path {ins}")
            shapes.append((mul1, n_theirs, mul_out))
        total = sum(math.prod(shape) for shape in shapes)

        def blocks(weight):
            weight = weight.reshape(-1).to(torch.float64)
            if weight.numel() != total:
                raise CheckpointError(f"{theirs}: {weight.numel()} weights, sevenomni's layout needs {total}")
            return [block.view(shape) for block, shape in zip(weight.split([math.prod(s) for s in shapes]), shapes)]

        def to_ours(weight):
            return (torch.cat([(b[:, self.species_rows, :] * rescale).reshape(-1) for b in blocks(weight)]),)

        def to_theirs(values, template):
            ours_blocks = values[0].reshape(-1).to(torch.float64).split([m1 * n_ours * mo for m1, _, mo in shapes])
            out = []
            for block, mine, (mul1, _, mul_out) in zip(blocks(template.clone()), ours_blocks, shapes):
                block[:, self.species_rows, :] = mine.view(mul1, n_ours, mul_out) / rescale
                out.append(block.reshape(-1))
            return torch.cat(out)

        self.add(f"{theirs}.fc_tensor_product.weight", f"{ours}.map.weight", to_ours, to_theirs)

    def radial_net(self, ours: str, theirs: str, conv, creation_order: list[tuple[int, int, int]], sort_old: bool) -> None:
        num = len([name for name, _ in conv.radial_net.named_parameters()])
        for k in range(num - 1):
            self.same(f"{theirs}.weight_nn.layer{k}.weight", f"{ours}.radial_net.layer{k}.weight")
        # The last layer: SevenNet's columns per path (in creation order before 0.11) ↔ ours in sorted
        # path order, with blocks negated where SevenNet's stored Wigner-3j has the other sign.
        tp = conv.tp
        in1, in2, out = tp.irreps_in1, tp.irreps_in2, tp.irreps_out
        sorted_paths = [(ins.i_in1, ins.i_in2, ins.i_out) for ins in tp.instructions]
        stored_order = creation_order if sort_old else sorted_paths
        if sorted(stored_order) != sorted(sorted_paths):
            raise CheckpointError(f"{theirs}: convolution paths differ from sevenomni's")
        width = {path: in1[path[0]].mul for path in sorted_paths}
        stored_start, position = {}, 0
        for path in stored_order:
            stored_start[path] = position
            position += width[path]
        signs = [self._w3j_sign(theirs, in1[p[0]].ir.l, in2[p[1]].ir.l, out[p[2]].ir.l, sort_old) for p in sorted_paths]
        columns = torch.cat([torch.arange(stored_start[p], stored_start[p] + width[p]) for p in sorted_paths])
        sign = torch.cat([torch.full((width[p],), s, dtype=torch.float64) for p, s in zip(sorted_paths, signs)])

        def to_ours(weight):
            if weight.shape[1] != position:
                raise CheckpointError(f"{theirs}: radial MLP has {weight.shape[1]} outputs, sevenomni needs {position}")
            return (weight.to(torch.float64)[:, columns] * sign,)

        def to_theirs(values, _):
            stored = torch.empty_like(values[0], dtype=torch.float64)
            stored[:, columns] = values[0].to(torch.float64) * sign
            return stored

        last = num - 1
        self.add(f"{theirs}.weight_nn.layer{last}.weight", f"{ours}.radial_net.layer{last}.weight", to_ours, to_theirs)

    def _w3j_sign(self, theirs: str, l1: int, l2: int, l3: int, sort_old: bool) -> float:
        key = f"{theirs}.convolution._compiled_main_left_right._w3j_{l1}_{l2}_{l3}"
        if key not in self.source:
            if sort_old and min(l1, l2, l3) > 0:
                raise CheckpointError(f"{key}: missing; needed to fix the sign convention of this old checkpoint")
            return 1.0
        stored, current = self.source[key].to(torch.float64), o3.wigner_3j(l1, l2, l3).to(torch.float64)
        if torch.allclose(stored, current, atol=1e-6):
            return 1.0
        if torch.allclose(stored, -current, atol=1e-6):
            return -1.0
        raise CheckpointError(f"{key}: stored Wigner-3j coefficients match neither sign convention")

    def shift_scale(self) -> None:
        num_tasks = len(self.model.tasks)
        self.species_table("rescale_atomic_energy.shift", "energy_shift.weight", "energy shift", num_tasks)
        config = self.model.config
        if config.scale_per_element:
            rows = num_tasks if config.scale_per_task else 1
            self.species_table("rescale_atomic_energy.scale", "energy_scale.weight", "energy scale", rows)
        else:
            self.add(
                "rescale_atomic_energy.scale",
                "energy_scale.weight",
                lambda t: (t.reshape(-1)[:1].reshape(1, 1),),
                lambda o, template: o[0].reshape(-1)[:1].expand(template.numel()).reshape(template.shape),
            )

    def species_table(self, theirs: str, ours: str, what: str, rows: int) -> None:
        """SevenNet's per-element (and possibly per-modality) table ↔ our [rows, species] table."""
        n = self.num_species_sevenn
        species_rows = self.species_rows

        def to_ours(values):
            values = values.to(torch.float64)
            if values.numel() == 1:
                return (values.reshape(1, 1).expand(rows, len(species_rows)),)
            if values.dim() == 1 and values.numel() == n:
                return (values[species_rows].reshape(1, -1).expand(rows, -1),)
            if values.dim() == 2 and values.shape == (rows, n):
                return (values[:, species_rows],)
            raise CheckpointError(f"{theirs} has shape {tuple(values.shape)}; expected ({n},) or ({rows}, {n})")

        def to_theirs(values, template):
            table, template = values[0].to(torch.float64), template.to(torch.float64)
            if template.dim() == 2:
                extra = rows - template.shape[0]  # appended modalities start from the first one's table
                full = torch.cat([template, template[:1].expand(extra, -1)]) if extra > 0 else template[:rows].clone()
                full[:, species_rows] = table
                return full
            if not torch.equal(table, table[:1].expand_as(table)):
                raise CheckpointError(
                    f"the {what} differs between tasks, but the SevenNet model has one for all modalities"
                )
            if template.numel() == 1:
                if not torch.equal(table, table.reshape(-1)[:1].expand_as(table)):
                    raise CheckpointError(f"the {what} differs between elements, but the SevenNet model has one value")
                return table.reshape(-1)[:1].reshape(template.shape)
            full = template.clone()
            full[species_rows] = table[0]
            return full

        self.add(theirs, ours, to_ours, to_theirs)


def _creation_order(irreps_in: o3.Irreps, irreps_sh: o3.Irreps, tp_filter: o3.Irreps) -> tuple[list, o3.Irreps, list]:
    """SevenNet's convolution paths in creation order (with sorted output slots) and its TP output irreps."""
    paths, outputs = [], []
    for i, (mul, ir_in) in enumerate(irreps_in):
        for j, (_, ir_sh) in enumerate(irreps_sh):
            for ir_out in ir_in * ir_sh:
                if ir_out in tp_filter:
                    paths.append((i, j, len(outputs)))
                    outputs.append((mul, ir_out))
    irreps_mid, permutation, _ = o3.Irreps(outputs).sort()
    return [(i, j, permutation[k]) for i, j, k in paths], irreps_mid, sorted(paths, key=lambda p: permutation[p[2]])


def _check_layout(model: SevenOmniModel, layers: list[dict]) -> None:
    """Compare our layer irreps with SevenNet's; a mismatch names the option responsible."""
    hint = "irreps_manual / is_parity / lmax_node (sevenomni uses one hidden irreps for all hidden layers)"
    for t, (ours, theirs) in enumerate(zip(model.layers, layers)):
        gate_scalars = o3.Irreps([(m, ir) for m, ir in theirs["out"] if ir.l == 0])
        gated = o3.Irreps([(m, ir) for m, ir in theirs["out"] if ir.l > 0])
        gate_ir = "0e" if o3.Irrep("0e") in [ir for _, ir in gate_scalars] else "0o"
        gates = o3.Irreps([(m, gate_ir) for m, _ in gated])
        gate_in = (gate_scalars + gates + gated).sort().irreps.simplify()
        gate_out = gate_scalars + gated
        _, irreps_mid, _ = _creation_order(theirs["in"], theirs["filter"], theirs["tp_filter"])
        checks = (
            ("input irreps", ours.irreps_in, theirs["in"]),
            ("gate input irreps", ours.gate.irreps_in, gate_in),
            ("output irreps", ours.irreps_out, gate_out),
            ("convolution output irreps", ours.conv.irreps_out, irreps_mid),
        )
        for what, mine, sevenn in checks:
            if o3.Irreps(mine) != o3.Irreps(sevenn):
                raise CheckpointError(
                    f"SevenNet layer {t} {what} {sevenn} differ from sevenomni's {mine}: the option {hint} "
                    "cannot be represented"
                )


def sevenn_weight_links(model: SevenOmniModel, config: dict, state_dict: dict[str, torch.Tensor]) -> list[WeightLink]:
    """The weight mapping between a SevenNet model (config + state dict with current key names) and
    the sevenomni ``model`` of the same architecture: one :class:`WeightLink` per SevenNet weight."""
    layers = sevenn_layer_irreps(config)
    _check_layout(model, layers)
    (major, minor, patch), suffix = checkpoint_version(config)
    sort_old = (major, minor, patch) < (0, 11, 0) or ((major, minor, patch) == (0, 11, 0) and suffix == "dev0")
    links = _Links(model, config, state_dict)
    if model.config.radial_trainable:
        links.same("edge_embedding.basis_function.coeffs", "radial_basis.frequencies")
    links.species_embedding()
    sites = set(model.config.task_embedding_sites)
    for t, (layer, irreps) in enumerate(zip(model.layers, layers)):
        ours = f"layers.{t}"
        if model.config.self_connection == "species":
            links.species_self_connection(f"{ours}.self_connection", f"{t}_self_connection_intro", layer.self_connection.map)
        else:
            links.linear(f"{ours}.self_connection.map", f"{t}_self_connection_intro", layer.self_connection.map)
        links.task_linear(f"{ours}.si1", f"{t}_self_interaction_1", layer.si1, "si1" in sites)
        creation, _, _ = _creation_order(irreps["in"], irreps["filter"], irreps["tp_filter"])
        links.radial_net(f"{ours}.conv", f"{t}_convolution", layer.conv, creation, sort_old)
        links.same(f"{t}_convolution.denominator", f"{ours}.conv.denominator")
        # SI-2 reads the TP output as simplified irreps, in SevenNet as in sevenomni.
        si2_in = tensor_product_irreps(
            irreps["in"], irreps["filter"], irreps["out"].lmax, "even" if t == len(layers) - 1 else "full", None
        )
        if si2_in != layer.si2.irreps_in:
            raise CheckpointError(f"SevenNet layer {t} self-interaction 2 reads {si2_in}, sevenomni {layer.si2.irreps_in}")
        links.task_linear(f"{ours}.si2", f"{t}_self_interaction_2", layer.si2, "si2" in sites)
    links.task_linear("readout_hidden", "reduce_input_to_hidden", model.readout_hidden, "readout" in sites)
    links.linear("readout_energy", "reduce_hidden_to_energy", model.readout_energy)
    links.shift_scale()
    return links.links
