"""Files and directories written beside their final place, then renamed into it."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path


def new_sibling(target: Path, pattern: str, create: Callable[[Path], object]) -> Path:
    """Create a new, uniquely named sibling of ``target`` with ``create(path)`` and return its path.

    ``pattern`` names it from ``{name}`` (the target's name) and ``{token}`` (random); ``create``
    must fail with FileExistsError on a clash (``Path.mkdir``, an ``O_EXCL`` open), and then another
    name is tried. Unlike ``tempfile``, whose files and directories are private (0600 / 0700),
    ``create`` gives the permissions that the umask gives any new file or directory.
    """
    while True:
        path = target.with_name(pattern.format(name=target.name, token=secrets.token_hex(6)))
        try:
            create(path)
        except FileExistsError:
            continue
        return path
