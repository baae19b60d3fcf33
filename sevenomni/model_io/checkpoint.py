"""Versioned model checkpoints, and the one safe, verified way every torch file is read.

A sevenomni model file holds hyperparameters, tasks, elements, cutoff and weights as plain data.
Every file (model, training state, SevenNet checkpoint) is read through :func:`load_archive`:

* **integrity** — every member of the torch zip archive is checked against the CRC-32 stored in
  the archive before anything is unpickled, so flipped or truncated bytes are refused with a
  :class:`CheckpointError` naming the file and the damaged member, never loaded silently;
* **no code execution** — the pickle is read with ``torch.load(weights_only=True)`` plus an explicit
  allowlist of globals (plain-data types only). A file needing anything else is refused, naming the
  offending global; only ``trust_pickle=True`` unpickles it fully (which can run arbitrary code).
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from sevenomni.core.base import validation_problems
from sevenomni.core.files import atomic_write
from sevenomni.nn import ModelConfig, SevenOmniModel

CHECKPOINT_FORMAT = "sevenomni-model"
CHECKPOINT_VERSION = 1
TRAINING_STATE_FORMAT = "sevenomni-training-state"
TRUST_HINT = "pass trust_pickle=True (CLI: --trust-pickle) only if you trust the file's origin: that can run arbitrary code"


class CheckpointError(ValueError):
    """A file that is not a readable sevenomni checkpoint (damaged, foreign or unsafe)."""


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save (with CRC-32s) to a temporary file beside ``path``, then rename: never a half-written file.

    The file gets the permissions of any new file under the umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as handle:
        torch.save(obj, handle)


def verify_archive(path: str | os.PathLike) -> None:
    """Check a torch zip archive before anything is unpickled; CheckpointError if it fails.

    Every member must be stored uncompressed (torch never compresses: a deflated member is a
    compression bomb, its size unbounded by the file's) and lie within the file, and its bytes must
    match their stored CRC-32. Any failure of the check (a damaged header, an unknown compression
    method, a truncated member) is a CheckpointError naming the file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if member.compress_type != zipfile.ZIP_STORED:
                    raise CheckpointError(
                        f"{path}: member {member.filename} is compressed (method {member.compress_type}); "
                        "torch never compresses: refused unread"
                    )
                if member.file_size != member.compress_size or member.header_offset + member.file_size > size:
                    raise CheckpointError(
                        f"{path}: member {member.filename} claims {member.file_size:,} bytes, more than the "
                        f"file holds ({size:,}): refused unread"
                    )
                crc = 0
                with archive.open(member) as stream:  # zipfile raises BadZipFile on a CRC mismatch
                    while chunk := stream.read(1 << 22):
                        crc = zlib.crc32(chunk, crc)
    except CheckpointError:
        raise
    except zipfile.BadZipFile as error:
        structures = structure_file_format(path)
        if structures is not None:
            raise CheckpointError(
                f"{path}: this is a structure file ({structures}), not a model; give a model file, training "
                "checkpoint, run directory or SevenNet checkpoint"
            ) from None
        detail = str(error) if "CRC" in str(error) else "not a complete torch zip archive"
        raise CheckpointError(f"{path}: damaged or truncated file ({detail}); it was not loaded") from None
    except Exception as error:  # noqa: BLE001 - whatever a damaged archive makes zipfile raise
        raise CheckpointError(
            f"{path}: damaged or truncated file ({type(error).__name__}: {str(error)[:200]}); it was not loaded"
        ) from None


def structure_file_format(path: Path) -> str | None:
    """The ASE format of ``path`` if it is a structure file ASE recognises by its contents, else None."""
    try:
        from ase.io.formats import filetype

        return filetype(str(path), guess=False)
    except Exception:  # noqa: BLE001 - not a structure file ASE knows
        return None


def _blocked_global(error: Exception) -> str:
    """The global that torch's restricted unpickler refused, from its message."""
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    return found.group(1) if found else str(error).strip().splitlines()[-1][:200]


def load_archive(
    path: str | os.PathLike,
    what: str,
    allowed_globals: Sequence[Any] = (),
    trust_pickle: bool = False,
) -> Any:
    """Read a torch file safely: CRC-verified, then unpickled with only allowlisted globals.

    ``what`` names the expected content in error messages. ``allowed_globals`` extends torch's
    weights-only allowlist (plain-data types only). ``trust_pickle=True`` unpickles fully.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    verify_archive(path)
    try:
        if trust_pickle:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "GLOBAL" not in str(error) and "global" not in str(error):
            raise CheckpointError(f"{path}: unreadable {what} ({error.__class__.__name__})") from None
        raise CheckpointError(
            f"{path}: refused to load: the file references the Python object {_blocked_global(error)!r}, which "
            f"is not on the allowlist of plain-data types for a {what} (loading it could run code); {TRUST_HINT}"
        ) from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError, AttributeError, TypeError) as error:
        raise CheckpointError(f"{path}: unreadable {what} ({error.__class__.__name__}: {str(error)[:200]})") from None


def model_record(model: SevenOmniModel, **metadata: Any) -> dict[str, Any]:
    """The plain-data record that a checkpoint file stores for ``model``."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": model.config.model_dump(mode="json"),
        "tasks": model.tasks.as_list(),
        "elements": model.elements,
        "cutoff": model.cutoff,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "metadata": dict(metadata),
    }


def save_checkpoint(model: SevenOmniModel, path: str | os.PathLike, **metadata: Any) -> None:
    """Write ``model`` (and JSON-like ``metadata``) to ``path`` atomically."""
    atomic_save(model_record(model, **metadata), path)


def check_model_record(record: Any, path: str | os.PathLike) -> dict[str, Any]:
    """``record`` if it is a sevenomni model record of this version, else CheckpointError."""
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a sevenomni model; expected a {CHECKPOINT_FORMAT} checkpoint written by "
            "sevenomni.save_checkpoint, a training checkpoint, a run directory or a SevenNet checkpoint"
        )
    if record.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {record.get('version')!r}; this sevenomni reads version {CHECKPOINT_VERSION}"
        )
    return record


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """A sevenomni model file's raw record, verified and safely loaded, or CheckpointError."""
    return check_model_record(load_archive(path, "sevenomni model"), path)


def model_from_record(record: dict[str, Any], source: str = "checkpoint") -> SevenOmniModel:
    """Rebuild the model a record describes and load its weights exactly."""
    return _build(record.get("config"), record.get("state_dict"), source)


def read_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """A training checkpoint (``checkpoints/*.pt``), verified and safely loaded, or CheckpointError.

    When the file is damaged, the error names the newest intact checkpoint beside it (if any).
    """
    try:
        state = load_archive(path, "sevenomni training checkpoint")
        if not isinstance(state, dict) or state.get("format") != TRAINING_STATE_FORMAT:
            raise CheckpointError(f"{path}: not a sevenomni training checkpoint")
    except CheckpointError as error:
        fallback = newest_intact_training_state(Path(path).parent, exclude=Path(path))
        if fallback is None:
            raise
        where, step = fallback
        raise CheckpointError(
            f"{error}; the newest intact checkpoint beside it is {where} (step {step}): "
            f"copy it over {Path(path).name} to continue from there"
        ) from None
    return state


def newest_intact_training_state(directory: Path, exclude: Path | None = None) -> tuple[Path, int] | None:
    """(path, global step) of the intact training checkpoint in ``directory`` with the most steps.

    On equal steps a stage checkpoint (``stage-*.pt``) wins over ``best.pt``.
    """
    newest: tuple[Path, int] | None = None
    for candidate in sorted(directory.glob("*.pt"), key=lambda p: (not p.name.startswith("stage-"), p.name)):
        if exclude is not None and candidate.resolve() == exclude.resolve():
            continue
        try:
            state = load_archive(candidate, "sevenomni training checkpoint")
            step = int(state["progress"]["global_step"])
        except (CheckpointError, KeyError, TypeError, ValueError):
            continue
        if state.get("format") == TRAINING_STATE_FORMAT and (newest is None or step > newest[1]):
            newest = (candidate, step)
    return newest


def model_from_training_state(state: dict[str, Any], source: str = "training checkpoint") -> SevenOmniModel:
    """The model a training checkpoint holds, with its EMA (averaged) weights where EMA was enabled."""
    model = _build(state.get("model_config"), state.get("model"), source)
    ema = state.get("ema")
    if ema is not None:
        parameters = list(model.parameters())
        shadows = ema.get("shadow") if isinstance(ema, dict) else None
        if not isinstance(shadows, (list, tuple)) or len(shadows) != len(parameters) or any(
            not isinstance(shadow, torch.Tensor) or shadow.shape != parameter.shape
            for parameter, shadow in zip(parameters, shadows)
        ):
            raise CheckpointError(f"{source}: the EMA weights do not match the model's parameters")
        with torch.no_grad():
            for parameter, shadow in zip(parameters, shadows):
                parameter.copy_(shadow)
    return model


def check_weights_match(config: ModelConfig, state_dict: Any, source: str) -> None:
    """CheckpointError unless ``state_dict`` has the layers and the sizes ``config`` describes.

    Runs before the model is built, so that a config edited to a huge network (more layers, wider
    layers) next to small weights is refused at once instead of exhausting memory. It compares the
    names and shapes :class:`SevenOmniModel` gives its weights: one ``layers.<i>.`` group per layer,
    the species embedding (elements × channels), the energy shifts (tasks × elements), and each
    layer's radial network (radial basis → MLP widths).
    """
    if not isinstance(state_dict, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
    ):
        raise CheckpointError(f"{source}: the weights are not a mapping of names to tensors")
    layers = {int(m.group(1)) for key in state_dict if (m := re.match(r"layers\.(\d+)\.", key))}
    if layers != set(range(config.num_layers)):
        raise CheckpointError(
            f"{source}: the config says num_layers {config.num_layers}, the weights hold {len(layers)} layer(s)"
        )
    expected = {
        "species_embedding.weight": (len(config.elements) * config.channels,),
        "energy_shift.weight": (len(config.tasks), len(config.elements)),
    }
    widths = [config.num_radial, *config.radial_mlp]
    for layer in range(config.num_layers):
        prefix = f"layers.{layer}.conv.radial_net"
        found = sorted(key for key in state_dict if key.startswith(prefix + ".layer"))
        if len(found) != len(widths):
            raise CheckpointError(
                f"{source}: the config's radial network has {len(widths)} layers, the weights' layer {layer} {len(found)}"
            )
        for index, width in enumerate(widths):
            key = f"{prefix}.layer{index}.weight"
            shape = tuple(state_dict[key].shape) if key in state_dict else None
            if shape is None or shape[0] != width or (index + 1 < len(widths) and shape[1] != widths[index + 1]):
                raise CheckpointError(
                    f"{source}: {key} has shape {shape}; the config (num_radial, radial_mlp {config.radial_mlp}) "
                    "needs other sizes"
                )
    for key, shape in expected.items():
        found = tuple(state_dict[key].shape) if key in state_dict else None
        if found != shape:
            raise CheckpointError(f"{source}: {key} has shape {found}, the config needs {shape}")


def _build(config: Any, state_dict: Any, source: str) -> SevenOmniModel:
    try:
        model_config = ModelConfig(**config)
    except TypeError:
        raise CheckpointError(f"{source}: the model config is not a mapping") from None
    except ValidationError as error:
        raise CheckpointError(f"{source}: invalid model config: {'; '.join(validation_problems(error, 'config'))}") from None
    check_weights_match(model_config, state_dict, source)
    try:
        model = SevenOmniModel(model_config)
        model.load_state_dict(state_dict, strict=True)
    except (TypeError, KeyError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{source}: inconsistent checkpoint contents: {error}") from None
    return model
