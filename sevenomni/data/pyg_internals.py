"""The one place that reads and writes torch_geometric's private batch fields.

Besides its tensors, a :class:`~torch_geometric.data.Batch` from ``Batch.from_data_list`` keeps
what it needs to split itself back into graphs (``to_data_list``, ``get_example``,
``index_select``): ``_slice_dict`` (per attribute, where each graph's rows start), ``_inc_dict``
(per attribute, the offset added to each graph's values: node offsets for ``edge_index``),
``_num_graphs``, and in its store ``_num_nodes`` (each graph's ``num_nodes``, part of
``Batch.to_dict()``); ``Batch(_base_cls=Data, ...)`` picks the class of the graphs it splits into.
None of this is public API. Checked against torch_geometric 2.8.1 only (pyproject allows >= 2.5):
``tests/unit/data/test_pyg_internals.py`` fails wherever an installed version no longer round-trips.
"""

from __future__ import annotations

from typing import Any

from torch_geometric.data import Batch, Data


def batch_parts(batch: Batch) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], int]:
    """(attributes, slices, increments, number of graphs) of a batch made by ``Batch.from_data_list``:
    everything :func:`batch_from_parts` rebuilds it from."""
    return batch.to_dict(), batch._slice_dict, batch._inc_dict, batch._num_graphs


def batch_from_parts(
    attributes: dict[str, Any], slices: dict[str, Any], increments: dict[str, Any], num_graphs: int
) -> Batch:
    """The batch of graphs (:class:`~torch_geometric.data.Data`) that :func:`batch_parts` took apart."""
    batch = Batch(_base_cls=Data, **attributes)
    batch._slice_dict = slices
    batch._inc_dict = increments
    batch._num_graphs = num_graphs
    return batch
