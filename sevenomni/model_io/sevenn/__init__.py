"""SevenNet checkpoints in (``import-sevenn``, ``init_from: 7net-mf-0``) and out (``export-sevenn``),
read without importing SevenNet."""

from sevenomni.model_io.sevenn.convert import import_sevenn, load_sevenn_model, sevenn_to_model
from sevenomni.model_io.sevenn.files import SEVENN_SHORTCUTS, is_sevenn_checkpoint, resolve_sevenn_checkpoint

__all__ = [
    "SEVENN_SHORTCUTS",
    "import_sevenn",
    "is_sevenn_checkpoint",
    "load_sevenn_model",
    "resolve_sevenn_checkpoint",
    "sevenn_to_model",
]
