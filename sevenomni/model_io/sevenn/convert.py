"""Load SevenNet checkpoints as sevenomni models, numerically identical, without importing ``sevenn``.

SevenNet (https://github.com/MDIL-SNU/SevenNet) and sevenomni build the same network: a NequIP
interaction stack with e3nn linears, 'uvu' convolutions sorted by output slot, gates, a two-layer
linear readout and per-species energy shift and scale. This module reads a SevenNet checkpoint's
config and ``model_state_dict`` and maps them onto :class:`~sevenomni.nn.SevenOmniModel`:

* hyperparameters → :class:`~sevenomni.nn.ModelConfig` (cutoff, Bessel basis, polynomial or XPLOR
  envelope, SO(3)/O(3) harmonics with or without ``_normalize_sph``, irreps per layer, radial MLP,
  both self-connection types — SevenNet's ``'nequip'`` is sevenomni's ``'species'``);
* species: SevenNet orders its one-hot alphabetically (``_type_map``), sevenomni by atomic number,
  so rows of the species embedding, the species self-connection and the shift/scale tables are
  permuted (a universal model's dummy element Z = 0 is dropped: no atom can carry it);
* multi-fidelity models: each modality becomes a task (in modal-index order). SevenNet appends the
  modal one-hot to the input of a linear layer, whose e3nn normalisation then counts the one-hot
  in the fan-in; sevenomni's :class:`~sevenomni.nn.TaskLinear` adds θT to the 0e outputs of a
  linear whose fan-in is the features alone. The effective (normalised) weights are equal, so
  every linear is converted through its effective matrix: W_ours = W_7net·√C/√(C+M) on blocks
  feeding 0e outputs and θT = W_modal/√(C+M);
* modal-wise shifts (and scales) → per-task rows; shared ones → repeated rows (shift) or a shared
  scale;
* per-layer convolution denominators are taken from the state dict;
* checkpoints older than SevenNet 0.11 store the last radial-MLP layer in path-creation order and
  some Wigner-3j blocks with the opposite sign convention: columns are sorted by output slot and
  the affected blocks negated (as SevenNet's own ``sort_old_convolution`` does); 22May2024-era
  module names (``'0 convolution'``, ``denumerator`` …) are renamed.

Every option sevenomni cannot represent (biases in linears, an MLP readout, modal node embedding,
other activations or interaction types, mixed self-connection types, accelerator-specific weight
layouts, irreps layouts that differ from sevenomni's …) raises :class:`CheckpointError` naming
the option; weights left over after the mapping are an error too — never a silently different
model.

**Trust.** SevenNet checkpoints are Python pickles. sevenomni reads them like its own files
(:func:`sevenomni.model_io.checkpoint.load_archive`): CRC-verified, then ``torch.load(weights_only=True)``
with an allowlist of numpy's plain array and scalar types, which every checkpoint shipped with
``sevenn`` needs and which cannot execute code. A file that references any other Python object is
refused with an error naming it; ``trust_pickle=True`` (CLI: ``--trust-pickle``) is the only way
to unpickle such a file fully — that can run arbitrary code, so do it only for files you trust.
"""

from __future__ import annotations

import importlib.util
import math
import os
import pickletools
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from ase.data import chemical_symbols
from e3nn import o3
from pydantic import ValidationError

from sevenomni.model_io.checkpoint import CheckpointError, load_archive, save_checkpoint, verify_archive
from sevenomni.nn import ModelConfig, SevenOmniModel

DEFAULT_TASK_NAME = "sevenn"

# Pretrained checkpoints shipped inside the ``sevenn`` wheel (names as SevenNet accepts them).
_SHIPPED = {
    "SevenNet_0__11Jul2024/checkpoint_sevennet_0.pth": ("-0", "-0_11jul2024", "-0_11july2024"),
    "SevenNet_0__22May2024/checkpoint_sevennet_0.pth": ("-0_22may2024",),
    "SevenNet_l3i5/checkpoint_l3i5.pth": ("-l3i5",),
    "SevenNet_MF_0/checkpoint_sevennet_mf_0.pth": ("-mf-0",),
}
SEVENN_SHORTCUTS: dict[str, str] = {
    f"{head}{tail}": relative for relative, tails in _SHIPPED.items() for tail in tails for head in ("7net", "sevennet")
}

# SevenNet's module names before its 0.10 renaming.
_OLD_MODULE_NAMES = {
    "EdgeEmbedding": "edge_embedding",
    "reducing nn input to hidden": "reduce_input_to_hidden",
    "reducing nn hidden to energy": "reduce_hidden_to_energy",
    "rescale atomic energy": "rescale_atomic_energy",
}
_OLD_LAYER_MODULE = re.compile(
    r"^(\d+) (self connection intro|convolution|self interaction 1|self interaction 2|equivariant gate)$"
)

# State-dict entries that are constants of e3nn modules, not weights.
_CONSTANT_SUFFIXES = (".output_mask", "._compiled_main_left_right")
_EMPTY_OK_SUFFIXES = (".linear.bias", ".convolution.weight", ".gate.mul.weight", ".fc_tensor_product.bias")

_ACTIVATIONS = {"e": "silu", "o": "tanh"}


# ---------------------------------------------------------------------------------------------
# Finding and reading the file
# ---------------------------------------------------------------------------------------------
def _sevenn_package_dir() -> Path:
    try:
        spec = importlib.util.find_spec("sevenn")
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise CheckpointError(
            "the SevenNet shortcuts name checkpoints shipped with the 'sevenn' package, which is not "
            "installed (pip install sevenn), or pass the path of a SevenNet checkpoint file"
        )
    return Path(spec.origin).parent


def resolve_sevenn_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A path to a SevenNet checkpoint: an existing file, or a shortcut such as ``'7net-mf-0'``.

    Shortcuts (case-insensitive): ``7net-0`` (= ``7net-0_11Jul2024``), ``7net-0_22May2024``,
    ``7net-l3i5``, ``7net-mf-0`` (also spelled ``sevennet-…``). They resolve to the files inside
    the installed ``sevenn`` package, found without importing it.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    key = str(name_or_path).lower()
    if key in SEVENN_SHORTCUTS:
        shipped = _sevenn_package_dir() / "pretrained_potentials" / SEVENN_SHORTCUTS[key]
        if not shipped.is_file():
            raise CheckpointError(f"{name_or_path}: the installed sevenn package has no {shipped}")
        return shipped
    raise CheckpointError(
        f"{name_or_path}: no such file, and not a SevenNet shortcut "
        f"({', '.join(sorted(k for k in SEVENN_SHORTCUTS if k.startswith('7net')))})"
    )


def is_sevenn_shortcut(name: str | os.PathLike) -> bool:
    return str(name).lower() in SEVENN_SHORTCUTS and not Path(name).exists()


def _pickle_strings(path: str | os.PathLike) -> set[str] | None:
    """The string constants in a torch zip archive's pickle, read without unpickling; None if not one
    (or not an intact one: see :func:`~sevenomni.model_io.checkpoint.verify_archive`)."""
    try:
        verify_archive(path)
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            if len(names) != 1:
                return None
            data = archive.read(names[0])
    except (CheckpointError, zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError):
        return None
    strings: set[str] = set()
    try:
        for opcode, argument, _ in pickletools.genops(data):
            if isinstance(argument, str) and "UNICODE" in opcode.name:
                strings.add(argument)
    except Exception:  # noqa: BLE001 - any malformed pickle: not something we recognise
        return None
    return strings


def is_sevenn_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a SevenNet checkpoint (decided without unpickling it)."""
    if not Path(path).is_file():
        return False
    strings = _pickle_strings(path)
    if strings is None:
        return False
    return {"model_state_dict", "config"} <= strings and bool({"num_convolution_layer", "_type_map"} & strings)


def _numpy_allowlist() -> list:
    import numpy as np

    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    allowed: list = [np.ndarray, np.dtype]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [(multiarray._reconstruct, f"{module}._reconstruct"), (multiarray.scalar, f"{module}.scalar")]
    allowed += sorted({type(np.dtype(code)) for code in "?bhilqBHILQefdgFDG"}, key=str)
    return allowed


def read_sevenn_checkpoint(path: str | os.PathLike, trust_pickle: bool = False) -> dict[str, Any]:
    """The raw checkpoint dict (``config``, ``model_state_dict`` …) of a SevenNet file.

    Read safely (see the module docstring); ``trust_pickle=True`` unpickles fully.
    """
    path = Path(path)
    if not is_sevenn_checkpoint(path):
        raise CheckpointError(f"{path}: not a SevenNet checkpoint")
    checkpoint = load_archive(path, "SevenNet checkpoint", _numpy_allowlist(), trust_pickle=trust_pickle)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("config"), dict):
        raise CheckpointError(f"{path}: a SevenNet checkpoint needs a 'config' dict")
    if not isinstance(checkpoint.get("model_state_dict"), dict) or not checkpoint["model_state_dict"]:
        raise CheckpointError(f"{path}: a SevenNet checkpoint needs a non-empty 'model_state_dict'")
    return checkpoint


# ---------------------------------------------------------------------------------------------
# Config → ModelConfig
# ---------------------------------------------------------------------------------------------
def _version(config: dict) -> tuple[tuple[int, int, int], str]:
    version = config.get("version")
    if not isinstance(version, str):
        raise CheckpointError("SevenNet config has no 'version'; cannot tell which weight layout it uses")
    parts = version.split(".")
    try:
        numbers = tuple(int(re.match(r"\d+", p).group()) for p in parts[:3])  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        raise CheckpointError(f"SevenNet config has an unreadable version {version!r}") from None
    return numbers, parts[3] if len(parts) > 3 else ""  # type: ignore[return-value]


def _option(config: dict, key: str, default: Any) -> Any:
    value = config.get(key, default)
    return default if value is None else value


def _unsupported(option: str, value: Any, why: str) -> CheckpointError:
    return CheckpointError(f"SevenNet option {option}={value!r} cannot be represented by sevenomni: {why}")


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _check_options(config: dict) -> None:
    """Raise CheckpointError for every architecture option sevenomni cannot reproduce exactly."""
    model_type = config.get("_model_type", "E3_equivariant_model")
    if model_type != "E3_equivariant_model":
        raise _unsupported("_model_type", model_type, "only E3_equivariant_model exists in sevenomni")
    if _option(config, "interaction_type", "nequip") != "nequip":
        raise _unsupported("interaction_type", config["interaction_type"], "only the NequIP interaction is implemented")
    if _option(config, "use_bias_in_linear", False):
        raise _unsupported("use_bias_in_linear", True, "sevenomni's equivariant linears have no biases")
    if _option(config, "readout_as_fcn", False):
        raise _unsupported("readout_as_fcn", True, "sevenomni's readout is two linear layers without activation")
    if config.get("optimize_by_reduce") is False:
        raise _unsupported("optimize_by_reduce", False, "this old readout is not supported (nor by SevenNet itself)")
    if _option(config, "act_radial", "silu") != "silu":
        raise _unsupported("act_radial", config["act_radial"], "the radial MLP uses silu")
    parity = bool(_option(config, "is_parity", True))
    for key in ("act_scalar", "act_gate"):
        acts = _option(config, key, dict(_ACTIVATIONS))
        used = ("e", "o") if parity else ("e",)
        for p in used:
            if acts.get(p, _ACTIVATIONS[p]) != _ACTIVATIONS[p]:
                raise _unsupported(
                    f"{key}[{p!r}]", acts.get(p), f"sevenomni gates use {_ACTIVATIONS[p]} for parity {p!r}"
                )
    radial = _option(config, "radial_basis", {"radial_basis_name": "bessel"})
    if radial.get("radial_basis_name", "bessel") != "bessel":
        raise _unsupported("radial_basis.radial_basis_name", radial.get("radial_basis_name"), "only the Bessel basis")
    unknown = set(radial) - {"radial_basis_name", "bessel_basis_num", "trainable_coeff"}
    if unknown:
        key = min(unknown)
        raise _unsupported(f"radial_basis.{key}", radial[key], "unknown radial-basis option")
    envelope = _option(config, "cutoff_function", {"cutoff_function_name": "poly_cut"})
    name = envelope.get("cutoff_function_name", "poly_cut")
    if name not in ("poly_cut", "XPLOR"):
        raise _unsupported("cutoff_function.cutoff_function_name", name, "only poly_cut and XPLOR envelopes")
    sc = _option(config, "self_connection_type", "nequip")
    kinds = set(sc) if isinstance(sc, (list, tuple)) else {sc}
    if not kinds <= {"nequip", "linear"}:
        raise _unsupported("self_connection_type", sc, "only 'nequip' (species) and 'linear' self-connections")
    if len(kinds) != 1:
        raise _unsupported("self_connection_type", sc, "sevenomni uses one self-connection type for all layers")
    if _option(config, "use_modality", False):
        if _option(config, "use_modal_node_embedding", False):
            raise _unsupported(
                "use_modal_node_embedding",
                True,
                "task embeddings sit on SI-1, SI-2 and the readout, not the species embedding",
            )
        modal_map = config.get("_modal_map")
        if not isinstance(modal_map, dict) or len(modal_map) < 2:
            raise _unsupported("_modal_map", modal_map, "a multi-modal model needs at least two modalities")
        if sorted(modal_map.values()) != list(range(len(modal_map))):
            raise _unsupported("_modal_map", modal_map, "modal indices must be 0 … M-1")
        if config.get("_number_of_modalities", len(modal_map)) != len(modal_map):
            raise _unsupported(
                "_number_of_modalities", config.get("_number_of_modalities"), "does not match _modal_map"
            )
    cueq = _option(config, "cuequivariance_config", {})
    if isinstance(cueq, dict) and cueq.get("use", False):
        raise _unsupported(
            "cuequivariance_config.use", True, "convert the checkpoint to the e3nn backend with SevenNet first"
        )
    for key in ("use_flash_tp", "use_oeq"):
        if _option(config, key, False):
            raise _unsupported(key, True, "convert the checkpoint to the e3nn backend with SevenNet first")
    dtype = _option(config, "dtype", "single")
    if dtype not in ("single", "float32"):
        raise _unsupported("dtype", dtype, "SevenNet models are imported in float32")


def _sh_lmax(config: dict) -> int:
    lmax = int(config["lmax"])
    lmax_edge = int(_option(config, "lmax_edge", -1))
    return lmax_edge if lmax_edge > 0 else lmax


def _normalize_sph(config: dict) -> bool:
    if "_normalize_sph" in config:
        return bool(config["_normalize_sph"])
    (major, minor, _), _ = _version(config)
    return not (major == 0 and minor <= 9)  # SevenNet's patch_old_config: absent means False before 0.10


def _tp_irreps(irreps_x: o3.Irreps, irreps_filter: o3.Irreps, drop_l: int | None, parity_mode: str, mul: int | None):
    """SevenNet's ``util.infer_irreps_out`` (full tensor product, sorted and simplified, filtered)."""
    products = [
        (m1 * m2, ir) for m1, ir1 in irreps_x.simplify() for m2, ir2 in irreps_filter.simplify() for ir in ir1 * ir2
    ]
    kept = []
    for m, ir in o3.Irreps(products).sort().irreps.simplify():
        if drop_l is not None and ir.l > drop_l:
            continue
        if parity_mode == "even" and ir.p == -1:
            continue
        kept.append((mul if mul else m, ir))
    return o3.Irreps(kept)


def sevenn_layer_irreps(config: dict) -> list[dict[str, o3.Irreps]]:
    """Per interaction layer, the irreps SevenNet builds: input, gate output and TP-output filter."""
    num_layers = int(config["num_convolution_layer"])
    channels = int(config["channel"])
    parity = bool(_option(config, "is_parity", True))
    irreps_filter = o3.Irreps.spherical_harmonics(_sh_lmax(config), p=-1 if parity else 1)
    lmax_node = int(_option(config, "lmax_node", -1))
    lmax_node = lmax_node if lmax_node > 0 else int(config["lmax"])
    manual = _option(config, "irreps_manual", False)
    if manual is not False:
        try:
            manual = [o3.Irreps(str(irreps)) for irreps in manual]
        except (ValueError, AssertionError, TypeError):
            raise _unsupported("irreps_manual", manual, "not a list of irreps") from None
        if len(manual) != num_layers + 1:
            raise _unsupported("irreps_manual", [str(i) for i in manual], "needs num_convolution_layer + 1 entries")
    irreps_x = o3.Irreps(f"{channels}x0e") if manual is False else manual[0]
    layers = []
    for t in range(num_layers):
        last = t == num_layers - 1
        if manual is False:
            out = _tp_irreps(irreps_x, irreps_filter, 0 if last else lmax_node, "even" if last else "full", channels)
        else:
            out = manual[t + 1]
        tp_filter = _tp_irreps(irreps_x, irreps_filter, out.lmax, "even" if last else "full", None)
        layers.append({"in": irreps_x, "out": out, "tp_filter": tp_filter, "filter": irreps_filter})
        irreps_x = out
    return layers


def _elements(config: dict) -> tuple[list[str], dict[int, int]]:
    type_map = config.get("_type_map")
    if not isinstance(type_map, dict) or not type_map:
        raise CheckpointError("SevenNet config has no '_type_map' (atomic number → species index)")
    type_map = {int(z): int(i) for z, i in type_map.items()}
    if sorted(type_map.values()) != list(range(len(type_map))):
        raise CheckpointError(f"SevenNet '_type_map' is not a numbering 0 … N-1: {type_map}")
    if any(not 0 <= z < len(chemical_symbols) for z in type_map):
        raise CheckpointError(f"SevenNet '_type_map' has unknown atomic numbers: {sorted(type_map)}")
    numbers = sorted(z for z in type_map if z > 0)  # Z = 0 (a universal model's dummy) is dropped
    return [chemical_symbols[z] for z in numbers], type_map


def _tasks(config: dict, task_name: str | None) -> list[str]:
    if _option(config, "use_modality", False):
        modal_map = config["_modal_map"]
        if task_name is not None:
            raise CheckpointError(
                f"task_name={task_name!r} applies to single-task checkpoints; this one has the modalities "
                f"{sorted(modal_map, key=modal_map.get)}, which become its tasks"
            )
        return [str(name) for name in sorted(modal_map, key=modal_map.get)]
    return [task_name or DEFAULT_TASK_NAME]


def sevenn_model_config(config: dict, state_dict: dict[str, torch.Tensor], task_name: str | None = None) -> ModelConfig:
    """The :class:`ModelConfig` of a SevenNet checkpoint (after :func:`_check_options`)."""
    _check_options(config)
    state_dict = _rename_old_keys(state_dict)
    for key in ("cutoff", "channel", "lmax", "num_convolution_layer"):
        if key not in config:
            raise CheckpointError(f"SevenNet config has no {key!r}")
    layers = sevenn_layer_irreps(config)
    channels = int(config["channel"])
    scalars = o3.Irreps(f"{channels}x0e")
    if layers[0]["in"] != scalars:
        raise _unsupported("irreps_manual[0]", str(layers[0]["in"]), f"sevenomni's node features start as {scalars}")
    if layers[-1]["out"] != scalars:
        raise _unsupported("irreps_manual[-1]", str(layers[-1]["out"]), f"sevenomni's last layer outputs {scalars}")
    hidden = str(layers[-2]["out"]) if len(layers) > 1 else None
    if hidden is not None and "0e" not in [str(ir) for _, ir in layers[-2]["out"]]:
        raise _unsupported("irreps_manual", hidden, "hidden features need even scalars (0e)")

    radial = _option(config, "radial_basis", {})
    envelope = _option(config, "cutoff_function", {"cutoff_function_name": "poly_cut"})
    xplor = envelope.get("cutoff_function_name", "poly_cut") == "XPLOR"
    sc = _option(config, "self_connection_type", "nequip")
    sc = sc[0] if isinstance(sc, (list, tuple)) else sc
    modal = bool(_option(config, "use_modality", False))
    sites = []
    if modal:
        sites = [
            site
            for site, key in (
                ("si1", "use_modal_self_inter_intro"),
                ("si2", "use_modal_self_inter_outro"),
                ("readout", "use_modal_output_block"),
            )
            if _option(config, key, False)
        ]
    scale = state_dict.get("rescale_atomic_energy.scale")
    if scale is None:
        raise CheckpointError("SevenNet state dict has no rescale_atomic_energy.scale")
    modal_scale = modal and bool(_option(config, "use_modal_wise_scale", False))
    elements, _ = _elements(config)
    denominators = []
    for t in range(len(layers)):
        key = f"{t}_convolution.denominator"
        if key not in state_dict:
            raise CheckpointError(f"SevenNet state dict has no {key}")
        denominators.append(float(state_dict[key].reshape(-1)[0]))
    try:
        return ModelConfig(
            tasks=_tasks(config, task_name),
            elements=elements,
            channels=channels,
            lmax=_sh_lmax(config),
            parity="o3" if _option(config, "is_parity", True) else "so3",
            num_layers=len(layers),
            hidden_irreps=hidden,
            cutoff=float(config["cutoff"]),
            num_radial=int(radial.get("bessel_basis_num", 8)),
            radial_trainable=bool(radial.get("trainable_coeff", True)),
            radial_mlp=[int(w) for w in _option(config, "weight_nn_hidden_neurons", [64, 64])],
            envelope="xplor" if xplor else "polynomial",
            polynomial_p=int(envelope.get("poly_cut_p_value", 6)),
            xplor_on=float(envelope["cutoff_on"]) if xplor else None,
            self_connection="species" if sc == "nequip" else "linear",
            task_embedding_sites=sites,
            sh_normalize=_normalize_sph(config),
            avg_num_neighbors=denominators,
            scale_per_task=modal_scale,
            scale_per_element=scale.numel() > 1,
            readout_hidden=layers[-1]["out"].dim // 2,
            dtype="float32",
        )
    except ValidationError as error:
        raise CheckpointError(f"SevenNet hyperparameters do not form a valid sevenomni model: {error}") from None


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------
def _rename_old_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, value in state_dict.items():
        head, _, tail = key.partition(".")
        head = _OLD_MODULE_NAMES.get(head, head)
        match = _OLD_LAYER_MODULE.match(head)
        if match:
            head = f"{match.group(1)}_{match.group(2).replace(' ', '_')}"
        renamed[f"{head}.{tail.replace('denumerator', 'denominator')}"] = value
    return renamed


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
        _, type_map = _elements(config)
        self.num_species_sevenn = len(type_map)
        unknown = [s for s, z in zip(model.elements, model.config.atomic_numbers) if z not in type_map]
        if unknown:
            raise CheckpointError(f"elements {unknown} are not in the SevenNet model's type map")
        # Row of SevenNet's (alphabetical) one-hot for each of our (atomic-number-ordered) species.
        self.species_rows = torch.tensor([type_map[z] for z in model.config.atomic_numbers])
        modal = bool(_option(config, "use_modality", False))
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
    (major, minor, patch), suffix = _version(config)
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
        si2_in = _tp_irreps(
            irreps["in"], irreps["filter"], irreps["out"].lmax, "even" if t == len(layers) - 1 else "full", None
        )
        if si2_in != layer.si2.irreps_in:
            raise CheckpointError(f"SevenNet layer {t} self-interaction 2 reads {si2_in}, sevenomni {layer.si2.irreps_in}")
        links.task_linear(f"{ours}.si2", f"{t}_self_interaction_2", layer.si2, "si2" in sites)
    links.task_linear("readout_hidden", "reduce_input_to_hidden", model.readout_hidden, "readout" in sites)
    links.linear("readout_energy", "reduce_hidden_to_energy", model.readout_energy)
    links.shift_scale()
    return links.links


def _leftovers(state_dict: dict[str, torch.Tensor], used: set[str]) -> list[str]:
    left = []
    for key, value in state_dict.items():
        if key in used or any(suffix in key for suffix in _CONSTANT_SUFFIXES):
            continue
        if key.endswith(_EMPTY_OK_SUFFIXES) and value.numel() == 0:
            continue
        left.append(key)
    return left


def sevenn_to_model(
    checkpoint: dict[str, Any], task_name: str | None = None, source: str = "SevenNet checkpoint"
) -> SevenOmniModel:
    """Build the sevenomni model equal to a SevenNet checkpoint dict (``config`` + ``model_state_dict``)."""
    config = dict(checkpoint["config"])
    try:
        state_dict = _rename_old_keys({k: v for k, v in checkpoint["model_state_dict"].items() if torch.is_tensor(v)})
        model = SevenOmniModel(sevenn_model_config(config, state_dict, task_name))
        target = model.state_dict()
        links = sevenn_weight_links(model, config, state_dict)
        for link in links:
            if link.theirs not in state_dict:
                raise CheckpointError(f"SevenNet state dict has no {link.theirs!r}")
            for key, value in zip(link.ours, link.to_ours(state_dict[link.theirs].detach().to("cpu"))):
                expected = target[key]
                if value.numel() != expected.numel():
                    raise CheckpointError(f"{key}: SevenNet provides {value.numel()} values, sevenomni needs {expected.numel()}")
                target[key] = value.reshape(expected.shape).to(expected.dtype).clone()
        left = _leftovers(state_dict, {link.theirs for link in links})
        if left:
            bias = [k for k in left if k.endswith("bias")]
            option = "use_bias_in_linear" if bias else "an architecture option sevenomni does not know"
            raise CheckpointError(f"SevenNet weights {left[:5]} have no place in sevenomni's model ({option})")
        model.load_state_dict(target, strict=True)
    except CheckpointError as error:
        raise CheckpointError(f"{source}: {error}") from None
    model.eval()
    return model


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------
def load_sevenn_model(
    name_or_path: str | os.PathLike, task_name: str | None = None, trust_pickle: bool = False
) -> SevenOmniModel:
    """A SevenNet checkpoint (file or shortcut such as ``'7net-mf-0'``) as an evaluating sevenomni model.

    ``task_name`` names the single task of a non-modal checkpoint (default ``'sevenn'``); a
    multi-fidelity checkpoint's tasks are its modalities. ``sevenn`` itself is never imported.
    See the module docstring about trusting pickled checkpoints (``trust_pickle``).
    """
    path = resolve_sevenn_checkpoint(name_or_path)
    checkpoint = read_sevenn_checkpoint(path, trust_pickle=trust_pickle)
    return sevenn_to_model(checkpoint, task_name=task_name, source=str(path))


def import_sevenn(
    name_or_path: str | os.PathLike,
    out: str | os.PathLike,
    task_name: str | None = None,
    trust_pickle: bool = False,
) -> SevenOmniModel:
    """Convert a SevenNet checkpoint to a sevenomni checkpoint at ``out``; returns the model."""
    path = resolve_sevenn_checkpoint(name_or_path)
    checkpoint = read_sevenn_checkpoint(path, trust_pickle=trust_pickle)
    model = sevenn_to_model(checkpoint, task_name=task_name, source=str(path))
    config = checkpoint["config"]
    metadata: dict[str, Any] = {
        "imported_from": "sevenn",
        "sevenn_checkpoint": str(path),
        "sevenn_version": str(config.get("version")),
    }
    if _option(config, "use_modality", False):
        metadata["sevenn_modal_map"] = {str(k): int(v) for k, v in config["_modal_map"].items()}
    for key in ("train_shift_scale", "train_denominator", "train_avg_num_neigh"):
        if key in config:
            metadata[f"sevenn_{key}"] = bool(_plain(config[key]))
    save_checkpoint(model, out, **metadata)
    return model
