"""A small random model over every element of the bundled tiny data set (for eval and benchmarks)."""

from __future__ import annotations

import torch

import sevenomni

TINY_ELEMENTS = ["H", "Li", "C", "N", "O", "F", "Mg", "Al", "Si"]


def tiny_model(dtype: str = "float64", seed: int = 0, tasks=("gfn1", "gfn2")):
    """Two tasks (named like the tiny set's methods) with non-zero θT, so that channels differ."""
    torch.manual_seed(seed)
    model = sevenomni.build_model(
        list(tasks), TINY_ELEMENTS, channels=4, lmax=1, num_layers=2, cutoff=3.5, radial_mlp=[8],
        avg_num_neighbors=8.0, dtype=dtype,
    )
    with torch.no_grad():
        for _, parameter in model.task_embedding_parameters():
            parameter.normal_(0.0, 0.5)
        model.energy_shift.weight.normal_(-5.0, 1.0)
    return model.eval()
