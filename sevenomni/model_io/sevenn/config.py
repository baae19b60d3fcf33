"""A SevenNet config as a sevenomni :class:`~sevenomni.nn.ModelConfig`: every option sevenomni cannot
reproduce exactly is refused, naming it; also the irreps SevenNet builds per layer, which the weight
mapping (:mod:`sevenomni.model_io.sevenn.weights`) follows.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from ase.data import chemical_symbols
from e3nn import o3
from pydantic import ValidationError

from sevenomni.model_io.checkpoint import CheckpointError
from sevenomni.model_io.sevenn.files import rename_old_keys
from sevenomni.nn import ModelConfig

DEFAULT_TASK_NAME = "sevenn"

_ACTIVATIONS = {"e": "silu", "o": "tanh"}


def checkpoint_version(config: dict) -> tuple[tuple[int, int, int], str]:
    """The SevenNet version that wrote ``config``: ((major, minor, patch), suffix)."""
    version = config.get("version")
    if not isinstance(version, str):
        raise CheckpointError("SevenNet config has no 'version'; cannot tell which weight layout it uses")
    parts = version.split(".")
    try:
        numbers = tuple(int(re.match(r"\d+", p).group()) for p in parts[:3])  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        raise CheckpointError(f"SevenNet config has an unreadable version {version!r}") from None
    return numbers, parts[3] if len(parts) > 3 else ""  # type: ignore[return-value]


def config_option(config: dict, key: str, default: Any) -> Any:
    """``config[key]``, or ``default`` where the key is missing or null."""
    value = config.get(key, default)
    return default if value is None else value


def _unsupported(option: str, value: Any, why: str) -> CheckpointError:
    return CheckpointError(f"SevenNet option {option}={value!r} cannot be represented by sevenomni: {why}")


def _check_options(config: dict) -> None:
    """Raise CheckpointError for every architecture option sevenomni cannot reproduce exactly."""
    model_type = config.get("_model_type", "E3_equivariant_model")
    if model_type != "E3_equivariant_model":
        raise _unsupported("_model_type", model_type, "only E3_equivariant_model exists in sevenomni")
    if config_option(config, "interaction_type", "nequip") != "nequip":
        raise _unsupported("interaction_type", config["interaction_type"], "only the NequIP interaction is implemented")
    if config_option(config, "use_bias_in_linear", False):
        raise _unsupported("use_bias_in_linear", True, "sevenomni's equivariant linears have no biases")
    if config_option(config, "readout_as_fcn", False):
        raise _unsupported("readout_as_fcn", True, "sevenomni's readout is two linear layers without activation")
    if config.get("optimize_by_reduce") is False:
        raise _unsupported("optimize_by_reduce", False, "this old readout is not supported (nor by SevenNet itself)")
    if config_option(config, "act_radial", "silu") != "silu":
        raise _unsupported("act_radial", config["act_radial"], "the radial MLP uses silu")
    parity = bool(config_option(config, "is_parity", True))
    for key in ("act_scalar", "act_gate"):
        acts = config_option(config, key, dict(_ACTIVATIONS))
        used = ("e", "o") if parity else ("e",)
        for p in used:
            if acts.get(p, _ACTIVATIONS[p]) != _ACTIVATIONS[p]:
                raise _unsupported(
                    f"{key}[{p!r}]", acts.get(p), f"sevenomni gates use {_ACTIVATIONS[p]} for parity {p!r}"
                )
    radial = config_option(config, "radial_basis", {"radial_basis_name": "bessel"})
    if radial.get("radial_basis_name", "bessel") != "bessel":
        raise _unsupported("radial_basis.radial_basis_name", radial.get("radial_basis_name"), "only the Bessel basis")
    unknown = set(radial) - {"radial_basis_name", "bessel_basis_num", "trainable_coeff"}
    if unknown:
        key = min(unknown)
        raise _unsupported(f"radial_basis.{key}", radial[key], "unknown radial-basis option")
    envelope = config_option(config, "cutoff_function", {"cutoff_function_name": "poly_cut"})
    name = envelope.get("cutoff_function_name", "poly_cut")
    if name not in ("poly_cut", "XPLOR"):
        raise _unsupported("cutoff_function.cutoff_function_name", name, "only poly_cut and XPLOR envelopes")
    sc = config_option(config, "self_connection_type", "nequip")
    kinds = set(sc) if isinstance(sc, (list, tuple)) else {sc}
    if not kinds <= {"nequip", "linear"}:
        raise _unsupported("self_connection_type", sc, "only 'nequip' (species) and 'linear' self-connections")
    if len(kinds) != 1:
        raise _unsupported("self_connection_type", sc, "sevenomni uses one self-connection type for all layers")
    if config_option(config, "use_modality", False):
        if config_option(config, "use_modal_node_embedding", False):
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
    cueq = config_option(config, "cuequivariance_config", {})
    if isinstance(cueq, dict) and cueq.get("use", False):
        raise _unsupported(
            "cuequivariance_config.use", True, "convert the checkpoint to the e3nn backend with SevenNet first"
        )
    for key in ("use_flash_tp", "use_oeq"):
        if config_option(config, key, False):
            raise _unsupported(key, True, "convert the checkpoint to the e3nn backend with SevenNet first")
    dtype = config_option(config, "dtype", "single")
    if dtype not in ("single", "float32"):
        raise _unsupported("dtype", dtype, "SevenNet models are imported in float32")


def _sh_lmax(config: dict) -> int:
    lmax = int(config["lmax"])
    lmax_edge = int(config_option(config, "lmax_edge", -1))
    return lmax_edge if lmax_edge > 0 else lmax


def _normalize_sph(config: dict) -> bool:
    if "_normalize_sph" in config:
        return bool(config["_normalize_sph"])
    (major, minor, _), _ = checkpoint_version(config)
    return not (major == 0 and minor <= 9)  # SevenNet's patch_old_config: absent means False before 0.10


def tensor_product_irreps(
    irreps_x: o3.Irreps, irreps_filter: o3.Irreps, drop_l: int | None, parity_mode: str, mul: int | None
):
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
    parity = bool(config_option(config, "is_parity", True))
    irreps_filter = o3.Irreps.spherical_harmonics(_sh_lmax(config), p=-1 if parity else 1)
    lmax_node = int(config_option(config, "lmax_node", -1))
    lmax_node = lmax_node if lmax_node > 0 else int(config["lmax"])
    manual = config_option(config, "irreps_manual", False)
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
            out = tensor_product_irreps(
                irreps_x, irreps_filter, 0 if last else lmax_node, "even" if last else "full", channels
            )
        else:
            out = manual[t + 1]
        tp_filter = tensor_product_irreps(irreps_x, irreps_filter, out.lmax, "even" if last else "full", None)
        layers.append({"in": irreps_x, "out": out, "tp_filter": tp_filter, "filter": irreps_filter})
        irreps_x = out
    return layers


def checkpoint_elements(config: dict) -> tuple[list[str], dict[int, int]]:
    """The elements of a SevenNet config by atomic number (a dummy Z = 0 dropped), and its Z -> index map."""
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
    if config_option(config, "use_modality", False):
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
    state_dict = rename_old_keys(state_dict)
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

    radial = config_option(config, "radial_basis", {})
    envelope = config_option(config, "cutoff_function", {"cutoff_function_name": "poly_cut"})
    xplor = envelope.get("cutoff_function_name", "poly_cut") == "XPLOR"
    sc = config_option(config, "self_connection_type", "nequip")
    sc = sc[0] if isinstance(sc, (list, tuple)) else sc
    modal = bool(config_option(config, "use_modality", False))
    sites = []
    if modal:
        sites = [
            site
            for site, key in (
                ("si1", "use_modal_self_inter_intro"),
                ("si2", "use_modal_self_inter_outro"),
                ("readout", "use_modal_output_block"),
            )
            if config_option(config, key, False)
        ]
    scale = state_dict.get("rescale_atomic_energy.scale")
    if scale is None:
        raise CheckpointError("SevenNet state dict has no rescale_atomic_energy.scale")
    modal_scale = modal and bool(config_option(config, "use_modal_wise_scale", False))
    elements, _ = checkpoint_elements(config)
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
            parity="o3" if config_option(config, "is_parity", True) else "so3",
            num_layers=len(layers),
            hidden_irreps=hidden,
            cutoff=float(config["cutoff"]),
            num_radial=int(radial.get("bessel_basis_num", 8)),
            radial_trainable=bool(radial.get("trainable_coeff", True)),
            radial_mlp=[int(w) for w in config_option(config, "weight_nn_hidden_neurons", [64, 64])],
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
