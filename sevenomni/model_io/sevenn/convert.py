"""Load SevenNet checkpoints as sevenomni models, numerically identical, without importing ``sevenn``.

SevenNet (https://github.com/MDIL-SNU/SevenNet) and sevenomni build the same network: a NequIP
interaction stack with e3nn linears, 'uvu' convolutions sorted by output slot, gates, a two-layer
linear readout and per-species energy shift and scale. This module reads a SevenNet checkpoint's
config and ``model_state_dict`` (:mod:`~sevenomni.model_io.sevenn.files`) and maps them onto
:class:`~sevenomni.nn.SevenOmniModel` (hyperparameters: :mod:`~sevenomni.model_io.sevenn.config`, weights:
:mod:`~sevenomni.model_io.sevenn.weights`):

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
"""

from __future__ import annotations

import os
from typing import Any

import torch

from sevenomni.model_io.checkpoint import CheckpointError, save_checkpoint
from sevenomni.model_io.sevenn.config import config_option, sevenn_model_config
from sevenomni.model_io.sevenn.files import read_sevenn_checkpoint, rename_old_keys, resolve_sevenn_checkpoint
from sevenomni.model_io.sevenn.weights import sevenn_weight_links
from sevenomni.nn import SevenOmniModel

# State-dict entries that are constants of e3nn modules, not weights.
_CONSTANT_SUFFIXES = (".output_mask", "._compiled_main_left_right")
_EMPTY_OK_SUFFIXES = (".linear.bias", ".convolution.weight", ".gate.mul.weight", ".fc_tensor_product.bias")


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


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
        state_dict = rename_old_keys({k: v for k, v in checkpoint["model_state_dict"].items() if torch.is_tensor(v)})
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
def load_sevenn_model(
    name_or_path: str | os.PathLike, task_name: str | None = None, trust_pickle: bool = False
) -> SevenOmniModel:
    """A SevenNet checkpoint (file or shortcut such as ``'7net-mf-0'``) as an evaluating sevenomni model.

    ``task_name`` names the single task of a non-modal checkpoint (default ``'sevenn'``); a
    multi-fidelity checkpoint's tasks are its modalities. ``sevenn`` itself is never imported.
    See :mod:`sevenomni.model_io.sevenn.files` about trusting pickled checkpoints (``trust_pickle``).
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
    if config_option(config, "use_modality", False):
        metadata["sevenn_modal_map"] = {str(k): int(v) for k, v in config["_modal_map"].items()}
    for key in ("train_shift_scale", "train_denominator", "train_avg_num_neigh"):
        if key in config:
            metadata[f"sevenn_{key}"] = bool(_plain(config[key]))
    save_checkpoint(model, out, **metadata)
    return model
