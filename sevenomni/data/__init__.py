"""Graphs, structure stores, readers, datasets and samplers.

Every name is imported on first use (``from sevenomni.data import LMDBDataset``), so that
importing a light submodule (the command line's :mod:`sevenomni.data.cli`) loads no torch, and
the package stays free of import cycles.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "atoms_to_graph": "graph",
    "collate": "graph",
    "DatabaseSpec": "spec",
    "SamplingSpec": "spec",
    "SplitSpec": "spec",
    "StoreReader": "store",
    "write_store": "store",
    "ingest": "ingest",
    "IngestReport": "ingest",
    "LMDBDataset": "dataset",
    "worker_collate": "dataset",
    "split_indices": "dataset",
    "MultiDatabaseSampler": "sampler",
    "element_reference_energies": "statistics",
    "reference_energies": "statistics",
    "average_num_neighbors": "statistics",
    "force_rms": "statistics",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"sevenomni.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'sevenomni.data' has no attribute {name!r}")
