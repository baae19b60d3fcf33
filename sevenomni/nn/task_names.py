"""Task identity: the ordered task names of a model, matched case-insensitively, and the common channel.

Vocabulary: a *task* is a computational protocol (PBE, r2SCAN, …), named in the run config's
databases; each task has one output *channel* of the model, named like it. One more channel, named
``common``, is the common PES (θT = 0), which takes a task's energy shifts. So a channel is named by
a task name or ``common``: wherever a channel is chosen for inference or analysis (calculator,
``predict``, ``eval --task``, ``analyze gap``, ``dbs select --channels``), ``common`` is accepted, and
tables head that column :data:`CHANNEL_COLUMN`.

Every layer that turns a task name into an index (model, trainer, data, evaluation, calculator)
goes through :class:`Tasks` (:meth:`Tasks.channel` for a channel name), so the rules live here
once: names are non-empty, unique without regard to case, and ``common`` is reserved for the
common PES.
"""

from __future__ import annotations

from collections.abc import Iterable

COMMON_CHANNEL = "common"
CHANNEL_COLUMN = "task (channel)"  # the header of a table column of channel names


def _key(name: str) -> str:
    """The form in which task names are compared: names that differ only in case are one task."""
    return name.lower()


def same_task(name: str, other: str) -> bool:
    """Whether two task names name one task (they match without regard to case)."""
    return _key(name) == _key(other)


def is_common(name: str | None) -> bool:
    """Whether ``name`` is the common-PES channel (any case)."""
    return name is not None and _key(name) == COMMON_CHANNEL


def check_task_name(name: object) -> None:
    """ValueError unless ``name`` may name a task: a non-empty string, not ``common`` (any case)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"task names must be non-empty strings, got {name!r}")
    if is_common(name):
        raise ValueError(f"'{COMMON_CHANNEL}' is reserved for the common-PES channel")


class Tasks(tuple):
    """An immutable, ordered tuple of task names with case-insensitive lookup.

    ``Tasks(["PBE", "r2scan"]).index("pbe") == 0``; an unknown name is a ValueError that lists
    the known ones. Equal to a list or tuple of the same names in the same spelling; written to
    JSON as a list.
    """

    def __new__(cls, names: Iterable[str] = ()) -> Tasks:
        names = list(names)
        for name in names:
            check_task_name(name)
        keys = [_key(name) for name in names]
        if len(set(keys)) != len(keys):
            raise ValueError(f"task names must be unique (case-insensitive): {names}")
        return super().__new__(cls, names)

    def _keys(self) -> list[str]:
        return [_key(name) for name in self]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _key(name) in self._keys()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = tuple.__hash__

    def __repr__(self) -> str:
        return repr(list(self))  # messages show the names as a plain list

    def index(self, name: str, start: int = 0, stop: int | None = None) -> int:
        """Position of ``name`` (any case); ValueError naming the known tasks."""
        keys = self._keys()
        stop = len(keys) if stop is None else stop
        key = _key(name) if isinstance(name, str) else name
        if key not in keys[start:stop]:
            raise ValueError(f"unknown task {name!r}; the tasks are {list(self)}")
        return keys.index(key, start, stop)

    def channel(self, name: str) -> int | None:
        """The channel ``name`` selects: a task's index, or None for the common PES (``common``, any
        case), whose energy shifts the caller takes from a task. ValueError naming the channels."""
        if is_common(name):
            return None
        if name not in self:
            raise ValueError(f"unknown task {name!r}; the tasks are {list(self)}, or {COMMON_CHANNEL!r} for the common PES")
        return self.index(name)

    def channel_name(self, name: str) -> str:
        """The stored spelling of channel ``name``: a task's, or ``common``."""
        index = self.channel(name)
        return COMMON_CHANNEL if index is None else self[index]

    def canonical(self, name: str) -> str:
        """The stored spelling of ``name``."""
        return self[self.index(name)]

    def extended(self, names: Iterable[str]) -> Tasks:
        """These tasks followed by those of ``names`` not among them yet (first spelling wins)."""
        combined = Tasks(self)
        for name in names:
            if name not in combined:
                combined = Tasks([*combined, name])
        return combined

    def as_list(self) -> list[str]:
        return list(self)
