"""Graphs, datasets and samplers."""

from sevenomni.data.graph import atoms_to_graph, collate

__all__ = ["atoms_to_graph", "collate"]
