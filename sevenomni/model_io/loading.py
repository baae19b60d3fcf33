"""One entry point for every kind of model source a user can name.

``load_model`` takes a sevenomni model file, a training checkpoint (``checkpoints/best.pt``,
``last.pt``, a stage checkpoint: the EMA weights where EMA was enabled), a run directory (its
``model.pt``), a SevenNet checkpoint file, or a SevenNet shortcut such as ``7net-mf-0``. It sits
above both file formats (:mod:`sevenomni.model_io.checkpoint`, :mod:`sevenomni.model_io.sevenn`), so neither
imports the other. Every file is CRC-verified and unpickled with an allowlist only (see
:mod:`sevenomni.model_io.checkpoint`).
"""

from __future__ import annotations

import os
from pathlib import Path

from sevenomni.core.arguments import add_trust_pickle_argument  # noqa: F401  (importable from here as before)
from sevenomni.model_io.checkpoint import (
    TRAINING_STATE_FORMAT,
    CheckpointError,
    check_model_record,
    load_archive,
    model_from_record,
    model_from_training_state,
)
from sevenomni.model_io.sevenn.convert import load_sevenn_model
from sevenomni.model_io.sevenn.files import is_sevenn_checkpoint, is_sevenn_shortcut
from sevenomni.nn import SevenOmniModel
from sevenomni.nn.backend import TPBackend, check_backend

RUN_MODEL_FILE = "model.pt"


def resolve_model_source(source: str | os.PathLike) -> Path | str:
    """A run directory → its exported ``model.pt``; anything else unchanged (shortcuts stay names)."""
    path = Path(source)
    if path.is_dir():
        model = path / RUN_MODEL_FILE
        if model.is_file():
            return model
        checkpoints = sorted((path / "checkpoints").glob("*.pt")) if (path / "checkpoints").is_dir() else []
        hint = f"; its training checkpoints: {', '.join(str(c) for c in checkpoints)}" if checkpoints else ""
        raise CheckpointError(f"{path}: a directory without {RUN_MODEL_FILE} (an unfinished run?){hint}")
    return source


def load_model(
    source: str | os.PathLike, trust_pickle: bool = False, tp_backend: TPBackend | None = None
) -> SevenOmniModel:
    """The model in ``source`` (see the module docstring), in evaluation mode.

    ``trust_pickle=True`` lets a SevenNet checkpoint that references Python objects beyond plain
    data be unpickled fully — that can run arbitrary code; never needed for sevenomni's own files.
    ``tp_backend`` (``e3nn``, ``cueq``, ``auto``) overrides the tensor-product backend the file names.
    """
    if tp_backend is not None:
        check_backend(tp_backend)
    source = resolve_model_source(source)
    path = Path(source)
    if is_sevenn_shortcut(source) or is_sevenn_checkpoint(path):
        model = load_sevenn_model(source, trust_pickle=trust_pickle)
    else:
        record = load_archive(path, "sevenomni model")
        if isinstance(record, dict) and record.get("format") == TRAINING_STATE_FORMAT:
            model = model_from_training_state(record, str(path))
        else:
            model = model_from_record(check_model_record(record, path), str(path))
    if tp_backend is not None:
        model.set_tp_backend(tp_backend)
    return model.eval()

