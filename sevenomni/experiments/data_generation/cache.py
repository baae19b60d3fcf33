"""The chunk cache under ``OUT/.cache``: a chunk's file name (with a hash of its parameters and the
generator version), atomic writes, and reading a finished chunk back.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sevenomni.experiments.data_generation.settings import SCRIPT_VERSION


def chunk_key(spec: dict[str, Any]) -> str:
    blob = json.dumps({"spec": spec, "version": SCRIPT_VERSION}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def chunk_stem(spec: dict[str, Any]) -> str:
    label = f"-{spec['config_type']}{spec['part']}" if spec["kind"] == "crystal" else ""
    return f"{spec['kind']}-{spec['source']}-{spec['split']}{label}-{chunk_key(spec)}"


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_write_xyz(path: Path, images: Sequence[Any]) -> None:
    from ase.io import write

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if images:
        write(tmp, list(images), format="extxyz")
    else:
        tmp.write_text("")
    os.replace(tmp, path)


def is_cached(cache_dir: Path, stem: str) -> bool:
    return (cache_dir / f"{stem}.json").exists() and (cache_dir / f"{stem}.extxyz").exists()


def load_chunk(cache_dir: Path, stem: str):
    from ase.io import read

    meta = json.loads((cache_dir / f"{stem}.json").read_text())
    images = read(cache_dir / f"{stem}.extxyz", index=":", format="extxyz") if meta["n"] else []
    for a in images:
        a.calc = None
    return images, meta
