"""Bridges to other interatomic-potential packages (their checkpoints, without importing them)."""

from sevenomni.interop.sevenn import (
    SEVENN_SHORTCUTS,
    import_sevenn,
    is_sevenn_checkpoint,
    load_sevenn_model,
    resolve_sevenn_checkpoint,
    sevenn_to_model,
)

__all__ = [
    "SEVENN_SHORTCUTS",
    "import_sevenn",
    "is_sevenn_checkpoint",
    "load_sevenn_model",
    "resolve_sevenn_checkpoint",
    "sevenn_to_model",
]
