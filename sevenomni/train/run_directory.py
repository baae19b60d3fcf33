"""A run directory: held by one run at a time, and never silently mixed with an earlier run."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from sevenomni.train.metric_log import metric_files

LOCK_FILE = ".lock"
RUN_FILES = ("checkpoints", "model.pt", "model_best.pt", "config.yaml", "train.log")

log = logging.getLogger(__name__)


class RunDirectoryError(ValueError):
    """A run directory that this run may not use: another run holds it, or it holds an earlier run."""


def run_files(run_dir: Path) -> list[Path]:
    """What a run has written into ``run_dir`` (checkpoints, models, config, log, metrics)."""
    names = [*RUN_FILES, *(path.name for path in metric_files(run_dir))]
    return [run_dir / name for name in names if (run_dir / name).exists()]


def entries(run_dir: Path) -> set[str]:
    """The names directly in ``run_dir`` (the lock file aside)."""
    return {path.name for path in Path(run_dir).iterdir() if path.name != LOCK_FILE}


def remove_created(run_dir: Path, before: set[str]) -> list[Path]:
    """Remove what a run that never took a step wrote into ``run_dir``: the entries absent from
    ``before``, except checkpoints (a saved state can be resumed). Returns what was removed."""
    removed = []
    for name in sorted(entries(run_dir) - before):
        path = Path(run_dir) / name
        if name == "checkpoints" or path.suffix == ".pt":
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(path)
    return removed


def resume_checkpoint(run_dir: Path) -> Path:
    """The checkpoint ``--resume RUN_DIR`` continues from; RunDirectoryError if the run saved none."""
    path = Path(run_dir) / "checkpoints" / "last.pt"
    if not path.is_file():
        where = "does not exist" if not Path(run_dir).is_dir() else f"holds no checkpoint ({path.relative_to(run_dir)})"
        raise RunDirectoryError(
            f"cannot resume {run_dir}: it {where}, so there is no run to continue; start it afresh with "
            f"`sevenomni train CONFIG.yaml` (add --overwrite if {run_dir} holds an earlier run's files)"
        )
    return path


def acquire_lock(path: Path) -> TextIO:
    """An exclusive ``flock`` on ``path``, which then holds this process's PID.

    The lock dies with its process, so a lock file left by a killed run does not block.
    """
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RunDirectoryError(
            f"{path.parent} is in use by another run (PID {holder}, lock {path}); "
            "wait for it to end or choose another train.run_dir"
        ) from None
    except OSError as error:  # a file system without flock support
        log.warning("cannot lock %s (%s): nothing keeps a second run out of this directory", path, error)
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


@contextmanager
def locked_run_directory(run_dir: Path, resume: bool, overwrite: bool) -> Iterator[None]:
    """Hold ``run_dir`` for the life of a run.

    A directory holding anything is refused unless the run continues it (``resume``) or
    replaces it (``overwrite``: the earlier run's own files are removed, other files stay).
    """
    if resume and overwrite:
        raise RunDirectoryError("resume a run or overwrite it, not both")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = acquire_lock(run_dir / LOCK_FILE)
    try:
        present = sorted(entries(run_dir))
        if present and not resume:
            if not overwrite:
                shown = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "")
                raise RunDirectoryError(
                    f"{run_dir} already holds a run or other files ({shown}): continue it with --resume {run_dir}, "
                    "replace it with --overwrite, or choose another train.run_dir"
                )
            for path in run_files(run_dir):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        yield
    finally:
        handle.close()  # closing the file releases the lock
