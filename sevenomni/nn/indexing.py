"""Gathers, scatters and permutations whose backward passes keep as little as possible.

* :func:`permute_columns` — ``x[:, permutation]`` whose backward is the inverse permutation (a
  gather, like the forward), not ``index_select``'s zero-fill and scatter-add.
* :func:`scatter_sum` / :func:`gather_rows` — ``Σ_e messages[e] → out[index[e]]`` and
  ``x[index]`` as each other's backward. Autograd's ``index_add`` keeps its whole source (the
  per-edge messages) alive for the backward; ``scatter_sum`` keeps only the index, which is what the
  backward needs: the gradient of a sum is a gather.

Every function here is exact and differentiable any number of times (each backward is built from
the other functions), as force training needs.
"""

from __future__ import annotations

import torch


class _PermuteColumns(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, permutation: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(permutation, inverse)
        return x.index_select(1, permutation)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        permutation, inverse = ctx.saved_tensors
        return _PermuteColumns.apply(grad, inverse, permutation), None, None


def permute_columns(x: torch.Tensor, permutation: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """``x[:, permutation]``; ``inverse`` must be ``argsort(permutation)``."""
    return _PermuteColumns.apply(x, permutation, inverse)


def inverse_permutation(permutation: torch.Tensor) -> torch.Tensor:
    inverse = torch.empty_like(permutation)
    inverse[permutation] = torch.arange(len(permutation), device=permutation.device)
    return inverse


class _ScatterSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, messages: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
        ctx.save_for_backward(index)
        return messages.new_zeros(size, *messages.shape[1:]).index_add_(0, index, messages)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        return _GatherRows.apply(grad, index), None, None


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.size = x.shape[0]
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        return _ScatterSum.apply(grad, index, ctx.size), None


def scatter_sum(messages: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """``out[i] = Σ_{e: index[e] = i} messages[e]`` for i < ``size``, keeping only ``index`` for backward."""
    return _ScatterSum.apply(messages, index, size)


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]`` whose backward is :func:`scatter_sum`."""
    return _GatherRows.apply(x, index)
