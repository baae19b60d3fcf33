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
(:func:`sevenomni.checkpoint.load_archive`): CRC-verified, then ``torch.load(weights_only=True)``
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
from pathlib import Path
from typing import Any

import torch
from ase.data import chemical_symbols
from e3nn import o3
from pydantic import ValidationError

from sevenomni.checkpoint import CheckpointError, load_archive, save_checkpoint, verify_archive
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
    (or not an intact one: see :func:`~sevenomni.checkpoint.verify_archive`)."""
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


def _effective_linear(
    irreps_in: o3.Irreps, irreps_out: o3.Irreps, weight: torch.Tensor
) -> dict[o3.Irrep, torch.Tensor]:
    """e3nn ``o3.Linear`` weights as normalised matrices, one per irrep: [in channels, out channels].

    Instructions connect every input entry to every output entry of the same irrep, input-major;
    the 'element' path normalisation divides by the square root of each output's fan-in.
    """
    weight = weight.reshape(-1).to(torch.float64)
    in_offsets, out_offsets = _channel_offsets(irreps_in), _channel_offsets(irreps_out)
    sizes: dict[o3.Irrep, list[int]] = {}
    for mul, ir in irreps_in:
        sizes.setdefault(ir, [0, 0])[0] += mul
    for mul, ir in irreps_out:
        sizes.setdefault(ir, [0, 0])[1] += mul
    matrices = {
        ir: torch.zeros(n_in, n_out, dtype=torch.float64) for ir, (n_in, n_out) in sizes.items() if n_in and n_out
    }
    fan_in = {i_out: sum(m for m, ir in irreps_in if ir == ir_out) for i_out, (_, ir_out) in enumerate(irreps_out)}
    position = 0
    for i_in, (mul_in, ir_in) in enumerate(irreps_in):
        for i_out, (mul_out, ir_out) in enumerate(irreps_out):
            if ir_in != ir_out:
                continue
            block = weight[position : position + mul_in * mul_out].view(mul_in, mul_out)
            position += mul_in * mul_out
            rows = slice(in_offsets[i_in], in_offsets[i_in] + mul_in)
            cols = slice(out_offsets[i_out], out_offsets[i_out] + mul_out)
            matrices[ir_in][rows, cols] = block / math.sqrt(fan_in[i_out])
    if position != weight.numel():
        raise CheckpointError(
            f"a SevenNet linear {irreps_in} -> {irreps_out} has {weight.numel()} weights, expected {position}"
        )
    return matrices


def _linear_weight(linear: o3.Linear, matrices: dict[o3.Irrep, torch.Tensor], what: str) -> torch.Tensor:
    """Our ``o3.Linear``'s flat weight reproducing the effective ``matrices`` exactly."""
    in_offsets, out_offsets = _channel_offsets(linear.irreps_in), _channel_offsets(linear.irreps_out)
    blocks, covered = [], set()
    for ins in linear.instructions:
        mul_in, mul_out = ins.path_shape
        ir = linear.irreps_in[ins.i_in].ir
        if ir not in matrices:
            raise CheckpointError(f"{what}: SevenNet has no {ir} path that sevenomni's layer needs")
        rows = slice(in_offsets[ins.i_in], in_offsets[ins.i_in] + mul_in)
        cols = slice(out_offsets[ins.i_out], out_offsets[ins.i_out] + mul_out)
        blocks.append((matrices[ir][rows, cols] / ins.path_weight).reshape(-1))
        covered.add(ir)
    for ir, matrix in matrices.items():
        if ir not in covered and bool(matrix.ne(0).any()):
            raise CheckpointError(f"{what}: SevenNet has {ir} weights that sevenomni's layer cannot hold")
    return torch.cat(blocks) if blocks else torch.zeros(0, dtype=torch.float64)


class _Mapper:
    """Builds our state dict from SevenNet's, tracking which SevenNet entries were consumed."""

    def __init__(self, model: SevenOmniModel, config: dict, state_dict: dict[str, torch.Tensor]):
        self.model = model
        self.config = config
        self.source = state_dict
        self.target = model.state_dict()
        self.used: set[str] = set()
        _, type_map = _elements(config)
        self.num_species_sevenn = len(type_map)
        # Row of SevenNet's (alphabetical) one-hot for each of our (atomic-number-ordered) species.
        self.species_rows = torch.tensor([type_map[z] for z in model.config.atomic_numbers])
        modal = bool(_option(config, "use_modality", False))
        self.num_modal = len(config["_modal_map"]) if modal else 0

    def take(self, key: str) -> torch.Tensor:
        if key not in self.source:
            raise CheckpointError(f"SevenNet state dict has no {key!r}")
        self.used.add(key)
        return self.source[key].detach().to("cpu")

    def put(self, key: str, value: torch.Tensor) -> None:
        expected = self.target[key]
        if value.numel() != expected.numel():
            raise CheckpointError(
                f"{key}: SevenNet provides {value.numel()} values, sevenomni needs {expected.numel()}"
            )
        self.target[key] = value.reshape(expected.shape).to(expected.dtype).clone()

    # --- the pieces -------------------------------------------------------------------------
    def task_linear(self, ours_prefix: str, theirs: str, task_linear, with_modal: bool) -> None:
        """A SevenNet IrrepsLinear (optionally with the modal one-hot appended) → TaskLinear."""
        irreps_in = task_linear.irreps_in
        if with_modal:
            irreps_in = irreps_in + o3.Irreps(f"{self.num_modal}x0e")
        matrices = _effective_linear(irreps_in, task_linear.irreps_out, self.take(f"{theirs}.linear.weight"))
        scalar = o3.Irrep("0e")
        theta = None
        if with_modal:
            base = sum(mul for mul, ir in task_linear.irreps_in if ir == scalar)
            theta = matrices[scalar][base:].clone()
            matrices[scalar] = matrices[scalar][:base]
        self.put(f"{ours_prefix}.linear.weight", _linear_weight(task_linear.linear, matrices, theirs))
        if (task_linear.embedding is None) != (theta is None):
            raise CheckpointError(f"{theirs}: modal one-hot use does not match sevenomni's task-embedding sites")
        if theta is not None:
            self.put(f"{ours_prefix}.embedding.weight", theta)

    def species_embedding(self) -> None:
        linear = self.model.species_embedding
        matrices = _effective_linear(
            o3.Irreps(f"{self.num_species_sevenn}x0e"),
            linear.irreps_out,
            self.take("onehot_to_feature_x.linear.weight"),
        )
        scalar = o3.Irrep("0e")
        matrices[scalar] = matrices[scalar][self.species_rows]
        self.put("species_embedding.weight", _linear_weight(linear, matrices, "onehot_to_feature_x"))

    def species_self_connection(self, ours: str, theirs: str, tp: o3.FullyConnectedTensorProduct) -> None:
        weight = self.take(f"{theirs}.fc_tensor_product.weight").reshape(-1).to(torch.float64)
        n_ours, n_theirs = len(self.species_rows), self.num_species_sevenn
        # Path weights scale as 1/sqrt(fan-in) and the fan-in is proportional to the species count.
        rescale = math.sqrt(n_ours / n_theirs)
        blocks, position = [], 0
        for ins in tp.instructions:
            mul1, mul2, mul_out = ins.path_shape
            if mul2 != n_ours:
                raise CheckpointError(f"{theirs}: unexpected species self-connection path {ins}")
            size = mul1 * n_theirs * mul_out
            block = weight[position : position + size].view(mul1, n_theirs, mul_out)
            position += size
            blocks.append((block[:, self.species_rows, :] * rescale).reshape(-1))
        if position != weight.numel():
            raise CheckpointError(f"{theirs}: {weight.numel()} weights, sevenomni's layout needs {position}")
        self.put(f"{ours}.map.weight", torch.cat(blocks))

    def radial_net(
        self, ours: str, theirs: str, conv, creation_order: list[tuple[int, int, int]], sort_old: bool
    ) -> None:
        net = conv.radial_net
        num = len([name for name, _ in net.named_parameters()])
        for k in range(num):
            value = self.take(f"{theirs}.weight_nn.layer{k}.weight")
            if k == num - 1:
                value = self._fix_last_radial_layer(theirs, conv, value, creation_order, sort_old)
            self.put(f"{ours}.radial_net.layer{k}.weight", value)

    def _fix_last_radial_layer(self, theirs, conv, value, creation_order, sort_old) -> torch.Tensor:
        """Columns in our (sorted) path order, with blocks negated where SevenNet's w3j has the other sign."""
        tp = conv.tp
        in1, in2, out = tp.irreps_in1, tp.irreps_in2, tp.irreps_out
        sorted_paths = [(ins.i_in1, ins.i_in2, ins.i_out) for ins in tp.instructions]
        stored_order = creation_order if sort_old else sorted_paths
        if sorted(stored_order) != sorted(sorted_paths):
            raise CheckpointError(f"{theirs}: convolution paths differ from sevenomni's")
        columns, position = {}, 0
        for path in stored_order:
            mul = in1[path[0]].mul
            columns[path] = value[:, position : position + mul]
            position += mul
        if position != value.shape[1]:
            raise CheckpointError(f"{theirs}: radial MLP has {value.shape[1]} outputs, sevenomni needs {position}")
        blocks = []
        for path in sorted_paths:
            block = columns[path]
            l1, l2, l3 = in1[path[0]].ir.l, in2[path[1]].ir.l, out[path[2]].ir.l
            key = f"{theirs}.convolution._compiled_main_left_right._w3j_{l1}_{l2}_{l3}"
            if key in self.source:
                self.used.add(key)
                stored, current = self.source[key].to(torch.float64), o3.wigner_3j(l1, l2, l3).to(torch.float64)
                if torch.allclose(stored, -current, atol=1e-6) and not torch.allclose(stored, current, atol=1e-6):
                    block = -block
                elif not torch.allclose(stored, current, atol=1e-6):
                    raise CheckpointError(f"{key}: stored Wigner-3j coefficients match neither sign convention")
            elif sort_old and min(l1, l2, l3) > 0:
                raise CheckpointError(f"{key}: missing; needed to fix the sign convention of this old checkpoint")
            blocks.append(block)
        return torch.cat(blocks, dim=1)

    def shift_scale(self) -> None:
        shift = self.take("rescale_atomic_energy.shift").to(torch.float64)
        scale = self.take("rescale_atomic_energy.scale").to(torch.float64)
        num_tasks = len(self.model.tasks)
        self.put("energy_shift.weight", self._per_species(shift, "shift", num_tasks))
        per_task = self.model.config.scale_per_task
        if self.model.config.scale_per_element:
            self.put("energy_scale.weight", self._per_species(scale, "scale", num_tasks if per_task else 1))
        else:
            self.put("energy_scale.weight", scale.reshape(-1)[:1].reshape(1, 1))

    def _per_species(self, values: torch.Tensor, what: str, rows: int) -> torch.Tensor:
        n = self.num_species_sevenn
        if values.numel() == 1:
            return values.reshape(1, 1).expand(rows, len(self.species_rows))
        if values.dim() == 1 and values.numel() == n:
            return values[self.species_rows].reshape(1, -1).expand(rows, -1)
        if values.dim() == 2 and values.shape == (rows, n):
            return values[:, self.species_rows]
        raise CheckpointError(
            f"rescale_atomic_energy.{what} has shape {tuple(values.shape)}; expected ({n},) or ({rows}, {n})"
        )

    def leftovers(self) -> list[str]:
        left = []
        for key, value in self.source.items():
            if key in self.used or any(suffix in key for suffix in _CONSTANT_SUFFIXES):
                continue
            if key.endswith(_EMPTY_OK_SUFFIXES) and value.numel() == 0:
                continue
            left.append(key)
        return left


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


def sevenn_to_model(
    checkpoint: dict[str, Any], task_name: str | None = None, source: str = "SevenNet checkpoint"
) -> SevenOmniModel:
    """Build the sevenomni model equal to a SevenNet checkpoint dict (``config`` + ``model_state_dict``)."""
    config = dict(checkpoint["config"])
    try:
        state_dict = _rename_old_keys({k: v for k, v in checkpoint["model_state_dict"].items() if torch.is_tensor(v)})
        model_config = sevenn_model_config(config, state_dict, task_name)
        layers = sevenn_layer_irreps(config)
        model = SevenOmniModel(model_config)
        _check_layout(model, layers)
        (major, minor, patch), suffix = _version(config)
        sort_old = (major, minor, patch) < (0, 11, 0) or ((major, minor, patch) == (0, 11, 0) and suffix == "dev0")

        mapper = _Mapper(model, config, state_dict)
        if model_config.radial_trainable:
            mapper.put("radial_basis.frequencies", mapper.take("edge_embedding.basis_function.coeffs"))
        mapper.species_embedding()
        sites = set(model_config.task_embedding_sites)
        for t, (layer, irreps) in enumerate(zip(model.layers, layers)):
            ours = f"layers.{t}"
            if model_config.self_connection == "species":
                mapper.species_self_connection(
                    f"{ours}.self_connection", f"{t}_self_connection_intro", layer.self_connection.map
                )
            else:
                sc = layer.self_connection.map
                matrices = _effective_linear(
                    sc.irreps_in, sc.irreps_out, mapper.take(f"{t}_self_connection_intro.linear.weight")
                )
                mapper.put(
                    f"{ours}.self_connection.map.weight", _linear_weight(sc, matrices, f"{t}_self_connection_intro")
                )
            mapper.task_linear(f"{ours}.si1", f"{t}_self_interaction_1", layer.si1, "si1" in sites)
            creation, _, _ = _creation_order(irreps["in"], irreps["filter"], irreps["tp_filter"])
            mapper.radial_net(f"{ours}.conv", f"{t}_convolution", layer.conv, creation, sort_old)
            mapper.put(f"{ours}.conv.denominator", mapper.take(f"{t}_convolution.denominator"))
            # SI-2 reads the TP output as simplified irreps, in SevenNet as in sevenomni.
            si2_in = _tp_irreps(
                irreps["in"], irreps["filter"], irreps["out"].lmax, "even" if t == len(layers) - 1 else "full", None
            )
            if si2_in != layer.si2.irreps_in:
                raise CheckpointError(
                    f"SevenNet layer {t} self-interaction 2 reads {si2_in}, sevenomni {layer.si2.irreps_in}"
                )
            mapper.task_linear(f"{ours}.si2", f"{t}_self_interaction_2", layer.si2, "si2" in sites)
        mapper.task_linear("readout_hidden", "reduce_input_to_hidden", model.readout_hidden, "readout" in sites)
        energy = model.readout_energy
        matrices = _effective_linear(
            energy.irreps_in, energy.irreps_out, mapper.take("reduce_hidden_to_energy.linear.weight")
        )
        mapper.put("readout_energy.weight", _linear_weight(energy, matrices, "reduce_hidden_to_energy"))
        mapper.shift_scale()

        left = mapper.leftovers()
        if left:
            bias = [k for k in left if k.endswith("bias")]
            option = "use_bias_in_linear" if bias else "an architecture option sevenomni does not know"
            raise CheckpointError(f"SevenNet weights {left[:5]} have no place in sevenomni's model ({option})")
        model.load_state_dict(mapper.target, strict=True)
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
