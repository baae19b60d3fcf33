"""Infrastructure every other part uses and that imports no other part: the strict config base and
numeric limits (``base``), graph-field names (``keys``), atomic file writes (``files``), logging
(``logs``), devices, the version, argparse-level command-line helpers (``arguments``) and the
Δ-learning baseline specs (``baseline``)."""
