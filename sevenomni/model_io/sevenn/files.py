"""SevenNet checkpoint files: the shortcuts to those shipped with ``sevenn`` (``7net-mf-0`` …), telling a
SevenNet checkpoint without unpickling it, reading it safely, and the current names of an old one's weights.

**Trust.** SevenNet checkpoints are Python pickles. sevenomni reads them like its own files
(:func:`sevenomni.model_io.checkpoint.load_archive`): CRC-verified, then ``torch.load(weights_only=True)``
with an allowlist of numpy's plain array and scalar types, which every checkpoint shipped with
``sevenn`` needs and which cannot execute code. A file that references any other Python object is
refused with an error naming it; ``trust_pickle=True`` (CLI: ``--trust-pickle``) is the only way
to unpickle such a file fully — that can run arbitrary code, so do it only for files you trust.
"""

from __future__ import annotations

import importlib.util
import os
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from sevenomni.model_io.checkpoint import CheckpointError, load_archive, verify_archive

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


def rename_old_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with the module names older SevenNet versions used renamed to the current ones."""
    renamed = {}
    for key, value in state_dict.items():
        head, _, tail = key.partition(".")
        head = _OLD_MODULE_NAMES.get(head, head)
        match = _OLD_LAYER_MODULE.match(head)
        if match:
            head = f"{match.group(1)}_{match.group(2).replace(' ', '_')}"
        renamed[f"{head}.{tail.replace('denumerator', 'denominator')}"] = value
    return renamed
