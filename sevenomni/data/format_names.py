"""The names of the source formats, importable without the readers (for the command line's
``--format`` choices); :mod:`sevenomni.data.readers` checks that its discovered readers match."""

SOURCE_FORMAT_NAMES = ("ase", "aselmdb", "mptrj", "spice", "store")
FORMATS = ("auto", *SOURCE_FORMAT_NAMES)
