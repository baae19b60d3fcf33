"""Versioned model checkpoints: hyperparameters, tasks, elements, cutoff and weights in one file."""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from sevenomni.nn import ModelConfig, SevenOmniModel

CHECKPOINT_FORMAT = "sevenomni-model"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a readable sevenomni checkpoint."""


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to a temporary file beside ``path``, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def model_record(model: SevenOmniModel, **metadata: Any) -> dict[str, Any]:
    """The plain-data record that a checkpoint file stores for ``model``."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": model.config.model_dump(mode="json"),
        "tasks": model.tasks,
        "elements": model.elements,
        "cutoff": model.cutoff,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "metadata": dict(metadata),
    }


def save_checkpoint(model: SevenOmniModel, path: str | os.PathLike, **metadata: Any) -> None:
    """Write ``model`` (and JSON-like ``metadata``) to ``path`` atomically."""
    atomic_save(model_record(model, **metadata), path)


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint's raw record safely (no arbitrary unpickling), or raise CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    expected = f"expected a {CHECKPOINT_FORMAT} checkpoint written by sevenomni.save_checkpoint"
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: unreadable or truncated file ({error.__class__.__name__}); {expected}") from None
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a sevenomni model; {expected}")
    if record.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {record.get('version')!r}; this sevenomni reads version {CHECKPOINT_VERSION}"
        )
    return record


def model_from_record(record: dict[str, Any], source: str = "checkpoint") -> SevenOmniModel:
    """Rebuild the model a record describes and load its weights exactly."""
    try:
        config = ModelConfig(**record["config"])
        model = SevenOmniModel(config)
        model.load_state_dict(record["state_dict"], strict=True)
    except (KeyError, ValidationError, RuntimeError) as error:
        raise CheckpointError(f"{source}: inconsistent checkpoint contents: {error}") from None
    return model


def load_model(path: str | os.PathLike) -> SevenOmniModel:
    """Load a model saved with :func:`save_checkpoint` (no training config needed).

    A SevenNet checkpoint (a file, or a shortcut such as ``'7net-mf-0'`` for those shipped with
    the ``sevenn`` package) is converted on the fly by :mod:`sevenomni.interop.sevenn`; it is
    unpickled beyond tensors only if recognised as SevenNet's and needing it (see there).
    """
    try:
        record = read_record(path)
    except CheckpointError:
        from sevenomni.interop import sevenn

        if sevenn.is_sevenn_checkpoint(path) or sevenn.is_sevenn_shortcut(path):
            return sevenn.load_sevenn_model(path)
        raise
    model = model_from_record(record, str(path))
    model.eval()
    return model
