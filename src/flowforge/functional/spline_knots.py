"""The knots of a monotonic rational-quadratic spline from unnormalised parameters: bin edges
on ``[-bound, bound]`` (widths and heights through a softmax with a minimum size) and the
positive derivatives at the knots (softplus with a minimum), with the running sums their
hand-written backward needs. Used by :mod:`flowforge.functional.splines`.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor


def knots(raw: Tensor, bound: float, minimum: float) -> Tensor:
    """Knot positions on ``[-bound, bound]`` from unnormalised bin logits, bins first.

    Args:
        raw: logits of shape ``(S, K, *)``: ``S`` stacked sets (widths and heights share
            one softmax and one cumsum), bins in dimension 1.

    Returns:
        ``knots`` of shape ``(S, K + 1, *)``, starting at ``-bound`` and ending exactly at
        ``bound``; every bin is at least ``2 * bound * minimum`` wide. Bin sizes are
        ``knots[:, k + 1] - knots[:, k]``.
    """
    k = raw.shape[1]
    # Bins lead, so each reduction over them is an elementwise op over contiguous slabs;
    # over a short last dimension (torch.softmax, amax, cumsum) they are several times slower.
    # The shift cancels in the softmax, so it needs no gradient (and no amax backward).
    e = torch.exp(raw - raw.amax(dim=1, keepdim=True).detach())
    frac = minimum + (1.0 - minimum * k) * (e / e.sum(dim=1, keepdim=True))
    cum = partial_sums(frac)
    # Pin both ends exactly to the bounds: sizes derived from the knots then satisfy
    # knots[k] + sizes[k] == knots[k + 1] exactly.
    ends = raw.new_full((raw.shape[0], 1, *raw.shape[2:]), bound)
    return torch.cat([-ends, 2.0 * bound * cum - bound, ends], dim=1)


def partial_sums(frac: Tensor) -> Tensor:
    """The ``K - 1`` interior partial sums ``(S, K - 1, *)`` of ``frac`` ``(S, K, *)``.

    Without autograd, ``K - 2`` slab additions into one buffer: torch.cumsum over a short
    inner dimension is 2-4x slower (and a product with a triangular matrix of ones slower
    still inside a flow, where its packing buffers are fresh allocations).
    """
    if torch.compiler.is_compiling() or (torch.is_grad_enabled() and frac.requires_grad):
        # Differentiable: a chain of slab additions, which inductor fuses into one kernel
        # (an extern cumsum would be two calls per layer in the compiled step).
        if frac.shape[1] == 1:
            return frac[:, :0]
        return torch.stack(list(itertools.accumulate(frac[:, :-1].unbind(1))), dim=1)
    k = frac.shape[1]
    out = torch.empty_like(frac[:, :-1])
    if k == 1:
        return out
    out[:, 0] = frac[:, 0]
    for i in range(1, k - 1):
        torch.add(out[:, i - 1], frac[:, i], out=out[:, i])
    return out


def suffix_sums(g: Tensor) -> Tensor:
    """The backward of :func:`partial_sums`: ``(S, K, *)`` from ``g`` ``(S, K - 1, *)``.

    Entry ``l`` is the sum of ``g[:, i]`` over ``i >= l``; the last entry is zero (the last
    fraction enters no interior partial sum).
    """
    k = g.shape[1] + 1
    out = g.new_empty((g.shape[0], k, *g.shape[2:]))
    out[:, k - 1] = 0.0
    if k == 1:
        return out
    out[:, k - 2] = g[:, k - 2]
    for i in range(k - 3, -1, -1):
        torch.add(out[:, i + 1], g[:, i], out=out[:, i])
    return out


def derivatives(raw: Tensor, minimum: float) -> Tensor:
    """Knot derivatives ``(K + 1, *)``: interior from ``raw`` ``(K - 1, *)``, 1 at both ends.

    A zero ``raw`` gives derivative 1, so zero parameters make the spline the identity.
    """
    shift = math.log(math.expm1(1.0 - minimum))
    inner = minimum + F.softplus(raw + shift)
    one = raw.new_ones((1, *raw.shape[1:]))
    return torch.cat([one, inner, one], dim=0)


# Elements per chunk: the ~30 temporaries of a chunk (each up to 3K + 3 floats per element)
# stay in the CPU caches; whole batches of 10^5-10^6 elements stream through memory instead.

__all__ = ["derivatives", "knots", "partial_sums", "suffix_sums"]
