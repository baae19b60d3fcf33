"""SevenNet checkpoints in (``import-sevenn``, ``init_from: 7net-mf-0``) and out (``export-sevenn``),
read without importing SevenNet."""

from sevenomni.model_io.sevenn.convert import (
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
