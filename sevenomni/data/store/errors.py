"""The errors of a store: missing, incomplete, damaged, foreign or unwritable, and corrupt records."""

from __future__ import annotations


class StoreError(ValueError):
    """A store is missing, incomplete, damaged, of another format, or cannot be written."""


class CorruptRecordError(StoreError):
    """A stored record fails its checks on read (names the store and the index)."""
