"""The per-process cache of read-only LMDB environments that the readers of a store share."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import lmdb

from sevenomni.data.store.errors import StoreError
from sevenomni.data.store.lmdb_file import check_lmdb_file


class _EnvironmentRegistry:
    """One read-only LMDB environment per store file and process, shared by its readers.

    LMDB forbids opening one environment twice in a process, and using one after ``fork``; so
    environments are reference-counted per (device, inode) of ``data.mdb``, and a forked child
    closes the ones it inherited (harmless for read-only, lock-free environments: it only unmaps
    the child's copy) before opening its own.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.entries: dict[tuple[int, int], list[Any]] = {}

    def _key(self, path: Path) -> tuple[int, int]:
        stat = os.stat(path / "data.mdb")
        return stat.st_dev, stat.st_ino

    def after_fork(self) -> None:
        if self.pid != os.getpid():
            self.lock = threading.Lock()
            for env, _ in self.entries.values():
                env.close()
            self.entries, self.pid = {}, os.getpid()

    def acquire(self, path: Path) -> tuple[lmdb.Environment, tuple[int, int]]:
        self.after_fork()
        with self.lock:
            key = self._key(path)
            entry = self.entries.get(key)
            if entry is None:
                check_lmdb_file(path / "data.mdb")
                try:
                    env = lmdb.open(
                        str(path), subdir=True, readonly=True, lock=False, readahead=False, meminit=False,
                        max_readers=4096, max_spare_txns=4,
                    )
                except lmdb.Error as error:
                    raise StoreError(f"{path / 'data.mdb'}: LMDB cannot open it: {error}") from None
                entry = self.entries[key] = [env, 0]
            entry[1] += 1
            return entry[0], key

    def release(self, key: tuple[int, int]) -> None:
        self.after_fork()
        with self.lock:
            entry = self.entries.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] <= 0:
                entry[0].close()
                del self.entries[key]


ENVIRONMENTS = _EnvironmentRegistry()
