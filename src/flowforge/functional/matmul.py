"""Matrix products arranged for the BLAS shapes that run fast on CPU."""

from __future__ import annotations

import torch
from torch import Tensor


def mm_narrow(a: Tensor, b: Tensor, out: Tensor | None = None, narrow: int = 64) -> Tensor:
    """``a @ b``, computed as ``(b.T @ a.T).T`` when the result has few columns.

    BLAS products whose output has a handful of columns (the gradients of a network's first
    layer at small ``D``: ``D`` columns) run several times below peak; the transposed
    product is the same arithmetic with a wide output (4x faster at ``D = 8``). "Few" is
    fewer than ``narrow`` (and fewer than ``a`` has rows). Without ``out`` the result may be
    a transposed view.

    Args:
        a: ``(M, K)``.
        b: ``(K, N)``.
        out: ``(M, N)`` to write the product into, or ``None``.
        narrow: below this many output columns, the transposed product.
    """
    if b.shape[1] < a.shape[0] and b.shape[1] < narrow:
        if out is None:
            return torch.mm(b.T, a.T).T
        out.copy_(torch.mm(b.T, a.T).T)
        return out
    if out is None:
        return torch.mm(a, b)
    return torch.mm(a, b, out=out)


__all__ = ["mm_narrow"]
