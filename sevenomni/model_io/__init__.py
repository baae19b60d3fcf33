"""Model files: checkpoints and exported models (safe loading, CRC, atomic saving: ``checkpoint``),
``load_model`` for any of them (``loading``), and SevenNet checkpoints in and out (``sevenn``)."""
