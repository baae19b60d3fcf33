"""Files and directories written beside their final place, then renamed into it; OS errors in words."""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


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


@contextmanager
def atomic_write(target: Path, mode: str = "w", **open_arguments) -> Iterator[IO]:
    """Write ``target`` through a new temporary file beside it, then rename it into place.

    The temporary file is created with ``O_EXCL`` under a random name, so it is never an existing
    file or a link planted there; it is synced before the rename and removed if writing fails.
    """
    target = Path(target)
    handles: list[IO] = []

    def create(path: Path) -> None:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        handles.append(os.fdopen(descriptor, mode, **open_arguments))

    temporary = new_sibling(target, ".{name}.{token}.tmp", create)
    try:
        with handles[0] as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        if error.filename is not None:
            raise
        raise OSError(error.errno, error.strerror, str(target)) from None  # a failed write names no file
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def describe_os_error(error: OSError) -> str:
    """An OS error in one line naming its path: ``runs/x/model.pt: No space left on device (the disk is full)``."""
    if error.filename is None:
        return str(error)
    where = f"{error.filename} -> {error.filename2}" if error.filename2 is not None else str(error.filename)
    full = " (the disk is full)" if error.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return f"{where}: {error.strerror or error}{full}"
