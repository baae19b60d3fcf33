"""The ``sevenomni`` logger: what a run tells its user, on the console and in its ``train.log``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

LOGGER_NAME = "sevenomni"
FILE_ONLY = {"console": False}  # ``extra=`` of a record the console has shown otherwise (an error message)


class ConsoleHandler(logging.Handler):
    """Messages on standard output (warnings prefixed), written above a live progress bar, never into it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "console", True) and super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if record.levelno >= logging.WARNING:
                message = f"{record.levelname.lower()}: {message}"
            tqdm.write(message, file=sys.stdout)
        except Exception:
            self.handleError(record)


def log_to_console() -> None:
    """Show the package's messages (INFO and up) on standard output; idempotent."""
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(handler, ConsoleHandler) for handler in logger.handlers):
        logger.addHandler(ConsoleHandler())
    logger.setLevel(logging.INFO)


@contextmanager
def log_to_file(path: Path) -> Iterator[None]:
    """Also append the package's messages (INFO and up), time-stamped, to ``path`` while the context lasts."""
    logger = logging.getLogger(LOGGER_NAME)
    handler = logging.FileHandler(path, encoding="utf-8", delay=True)  # no file for a run that says nothing
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.INFO)
    logger.addHandler(handler)
    level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.setLevel(level)
        logger.removeHandler(handler)
        handler.close()
