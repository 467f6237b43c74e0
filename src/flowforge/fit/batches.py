"""Epochs of shuffled minibatches of in-memory rows: the one epoch batching of the fits that
hold their data as a tensor (the estimators' :func:`~flowforge.sklearn._fit.fit_flow`, the
simulation-based estimators' :meth:`~flowforge.sbi.NPE.fit`).

Example:
    >>> import torch
    >>> gen = torch.Generator().manual_seed(0)
    >>> [b.tolist() for b in shuffled_batches(5, 2, gen)]
    [[4, 0], [1, 3], [2]]
    >>> sorted(i for b in shuffled_batches(torch.tensor([7, 8, 9]), 2, gen) for i in b.tolist())
    [7, 8, 9]
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["shuffled_batches"]


def shuffled_batches(
    rows: int | Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[Tensor]:
    """One epoch: the row indices in a random order, in batches of ``batch_size`` (the last
    one smaller when they do not divide).

    The order is one :func:`torch.randperm` drawn from ``generator`` when the first batch is
    taken, so a caller that draws from the same generator between batches (noise, say) gets
    the same numbers whatever the epoch's length.

    Args:
        rows: ``N`` (the indices ``0 .. N-1``) or a 1-D tensor of the row indices to use.
        batch_size: rows per batch (``>= 1``).
        generator: the source of the order.

    Yields:
        ``(B,)`` index tensors, ``B <= batch_size``, covering every row once.
    """
    if isinstance(rows, Tensor):
        order = rows[torch.randperm(rows.numel(), generator=generator)]
    else:
        order = torch.randperm(rows, generator=generator)
    for i in range(0, order.numel(), batch_size):
        yield order[i : i + batch_size]
