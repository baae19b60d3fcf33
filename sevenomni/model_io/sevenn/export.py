"""Write a sevenomni model back as a SevenNet checkpoint, for a model imported from SevenNet (and
perhaps fine-tuned since) to run with SevenNet's own tools.

The SevenNet config comes from a *template* checkpoint — the one the model was imported from —
and the weights are mapped back through the same table of links the import uses
(:func:`sevenomni.model_io.sevenn.weights.sevenn_weight_links`), read backwards. Template entries that
sevenomni does not hold (the rows of a universal model's dummy element, constants of e3nn
modules) are kept as they are.

A multi-modal template gains the tasks appended to the model during fine-tuning as new
modalities: the modal map, the modal one-hot inputs of the modal-wise linears (SevenNet's
normalisation counts them in the fan-in; the conversion goes through the effective matrices, so
the predictions stay the same) and the modal-wise shift (and scale) tables grow. Anything SevenNet
cannot represent — extra θT sites, θT normalisation, a penalized or fixed task scale, elements
outside the template's type map, Δ-learning baselines, a linear correction, tasks beyond a
single-task template's one, other hyperparameters than the template's — is refused with an error
naming it.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch

from sevenomni.model_io.checkpoint import CheckpointError, atomic_save, load_archive
from sevenomni.model_io.sevenn.config import checkpoint_elements, config_option, sevenn_model_config
from sevenomni.model_io.sevenn.files import (
    is_sevenn_checkpoint,
    is_sevenn_shortcut,
    read_sevenn_checkpoint,
    rename_old_keys,
    resolve_sevenn_checkpoint,
)
from sevenomni.model_io.sevenn.weights import sevenn_weight_links
from sevenomni.nn import SevenOmniModel

# Model-config fields that may differ from the template's: they are written into the exported
# weights (denominators), follow the model (tasks: checked separately), or do not change predictions.
_FREE_FIELDS = {"tasks", "elements", "avg_num_neighbors", "task_elements", "tp_backend"}


def recorded_template(source: str | os.PathLike) -> Path | None:
    """The SevenNet checkpoint a model source was imported from, where it records one: a SevenNet
    checkpoint (or shortcut) is its own template; a model file written by ``import-sevenn`` names it.
    ``source`` is a file or shortcut (a run directory resolved to its model file beforehand)."""
    if is_sevenn_shortcut(source):
        return resolve_sevenn_checkpoint(source)
    path = Path(source)
    if is_sevenn_checkpoint(path):
        return path
    record = load_archive(path, "sevenomni model")
    metadata = record.get("metadata") if isinstance(record, dict) else None
    recorded = metadata.get("sevenn_checkpoint") if isinstance(metadata, dict) else None
    return Path(recorded) if isinstance(recorded, str) else None


def _refuse(feature: str) -> CheckpointError:
    return CheckpointError(f"cannot export to SevenNet: {feature} has no SevenNet equivalent")


def _check_representable(model: SevenOmniModel, config: dict) -> None:
    """Refuse, naming it, every feature of ``model`` a SevenNet model built on ``config`` lacks."""
    ours = model.config
    if ours.baselines:
        raise _refuse(f"the Δ-learning baseline of task(s) {sorted(ours.baselines)}")
    if ours.linear_correction:
        raise _refuse("the per-task linear correction (model.linear_correction)")
    if ours.scale_per_task in ("penalized", "fixed"):
        raise _refuse(f"scale_per_task: {ours.scale_per_task}")
    if ours.task_embedding_norm:
        raise _refuse("task_embedding_norm (RMS-normalised θT)")
    _, type_map = checkpoint_elements(config)
    outside = [s for s, z in zip(ours.elements, ours.atomic_numbers) if z not in type_map]
    if outside:
        raise _refuse(f"elements {outside} outside the template's type map")
    modal = bool(config_option(config, "use_modality", False))
    if not modal and len(ours.tasks) > 1:
        raise _refuse(
            f"more than one task ({', '.join(ours.tasks)}) on a single-task template (SevenNet use_modality false)"
        )
    if modal:
        modals = sorted(config["_modal_map"], key=config["_modal_map"].get)
        if ours.tasks[: len(modals)] != modals:
            raise CheckpointError(
                f"cannot export to SevenNet: the model's tasks {ours.tasks} do not begin with the template's "
                f"modalities {modals} (in that order)"
            )


def _export_config(model: SevenOmniModel, template: dict) -> dict:
    """The template's SevenNet config, with the model's tasks as its modalities."""
    config = copy.deepcopy(template)
    if config_option(config, "use_modality", False):
        tasks = list(model.tasks)
        config["_modal_map"] = {task: index for index, task in enumerate(tasks)}
        config["_number_of_modalities"] = len(tasks)
        if "modal_list" in config:
            config["modal_list"] = tasks
    return config


def _check_architecture(model: SevenOmniModel, config: dict, state_dict: dict[str, torch.Tensor]) -> None:
    expected = sevenn_model_config(config, state_dict).model_dump()
    ours = model.config.model_dump()
    if set(ours["task_embedding_sites"]) != set(expected["task_embedding_sites"]):
        raise _refuse(
            f"θT at sites {ours['task_embedding_sites']} (the template's modal-wise layers: "
            f"{expected['task_embedding_sites']})"
        )
    differ = [key for key in ours if key not in _FREE_FIELDS and ours[key] != expected.get(key)]
    if differ:
        key = differ[0]
        raise CheckpointError(
            f"cannot export to SevenNet: the model's {key} ({ours[key]!r}) differs from the template's "
            f"({expected.get(key)!r}); export with the SevenNet checkpoint the model was imported from"
        )


def _like(value: torch.Tensor, template: Any) -> Any:
    """``value`` in the template config's representation (tensor or nested list)."""
    if torch.is_tensor(template):
        return value.to(template.dtype)
    return value.tolist()


def model_to_sevenn(model: SevenOmniModel, template: dict[str, Any]) -> dict[str, Any]:
    """The SevenNet checkpoint dict (``config``, ``model_state_dict``) equal to ``model``, built on
    the ``template`` SevenNet checkpoint dict."""
    _check_representable(model, template["config"])
    config = _export_config(model, template["config"])
    original = {k: v for k, v in template["model_state_dict"].items() if torch.is_tensor(v)}
    state_dict = rename_old_keys(original)
    original_names = dict(zip(state_dict, original))
    _check_architecture(model, config, state_dict)
    ours = {key: value.detach().to("cpu", torch.float64) for key, value in model.state_dict().items()}
    exported = dict(state_dict)
    for link in sevenn_weight_links(model, config, state_dict):
        if link.theirs not in state_dict:
            raise CheckpointError(f"the template has no {link.theirs!r}")
        reference = state_dict[link.theirs].detach().to("cpu")
        value = link.to_theirs(tuple(ours[key] for key in link.ours), reference.to(torch.float64))
        if value.numel() == reference.numel():  # else grown by appended modalities, in SevenNet's layout
            value = value.reshape(reference.shape)
        exported[link.theirs] = value.to(reference.dtype).contiguous()
    for key in ("shift", "scale"):
        if key in config:
            config[key] = _like(exported[f"rescale_atomic_energy.{key}"], config[key])
    return {
        "config": config,
        "model_state_dict": {original_names[key]: value for key, value in exported.items()},
    }


def export_sevenn(
    model: SevenOmniModel,
    model_source: str | os.PathLike,
    out: str | os.PathLike,
    template: str | os.PathLike | None = None,
    trust_pickle: bool = False,
) -> dict[str, Any]:
    """Write ``model``, loaded from ``model_source``, as a SevenNet checkpoint at ``out``; ``template``
    (a SevenNet checkpoint or shortcut) defaults to the one ``model_source`` records it was imported
    from. Returns the checkpoint dict written."""
    if template is None:
        template = recorded_template(model_source)
        if template is None:
            raise CheckpointError(
                f"{model_source} does not record the SevenNet checkpoint it was imported from; name it with "
                "--template (a SevenNet checkpoint file, or a shortcut such as 7net-0 or 7net-mf-0)"
            )
    template_path = resolve_sevenn_checkpoint(template)
    checkpoint = read_sevenn_checkpoint(template_path, trust_pickle=trust_pickle)
    try:
        exported = model_to_sevenn(model, checkpoint)
    except CheckpointError as error:
        raise CheckpointError(f"{model_source} (template {template_path}): {error}") from None
    atomic_save(exported, out)
    return exported
