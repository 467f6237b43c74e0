"""Monotonic rational-quadratic splines with identity (linear) tails.

References:
    Durkan, Bekasov, Murray, Papamakarios (2019). Neural Spline Flows. arXiv:1906.04032.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_MIN_WIDTH = 1e-3
DEFAULT_MIN_HEIGHT = 1e-3
DEFAULT_MIN_DERIVATIVE = 1e-3


def _knots(raw: Tensor, bound: float, minimum: float) -> Tensor:
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
    cum = torch.cumsum(frac, dim=1)
    # Pin both ends exactly to the bounds (cumsum may round): sizes derived from the knots
    # then satisfy knots[k] + sizes[k] == knots[k + 1] exactly.
    ends = raw.new_full((raw.shape[0], 1, *raw.shape[2:]), bound)
    return torch.cat([-ends, 2.0 * bound * cum[:, :-1] - bound, ends], dim=1)


def _derivatives(raw: Tensor, minimum: float) -> Tensor:
    """Knot derivatives ``(K + 1, *)``: interior from ``raw`` ``(K - 1, *)``, 1 at both ends.

    A zero ``raw`` gives derivative 1, so zero parameters make the spline the identity.
    """
    shift = math.log(math.expm1(1.0 - minimum))
    inner = minimum + F.softplus(raw + shift)
    one = raw.new_ones((1, *raw.shape[1:]))
    return torch.cat([one, inner, one], dim=0)


# Elements per chunk: the ~30 temporaries of a chunk (each up to 3K + 3 floats per element)
# stay in the CPU caches; whole batches of 10^5-10^6 elements stream through memory instead.
CHUNK = 1 << 15


def rational_quadratic_spline(
    x: Tensor,
    params: Tensor,
    bound: float = 5.0,
    inverse: bool = False,
    min_width: float = DEFAULT_MIN_WIDTH,
    min_height: float = DEFAULT_MIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[Tensor, Tensor]:
    """Apply an elementwise monotonic rational-quadratic spline (or its inverse).

    Inside ``[-bound, bound]`` the map is a spline of ``K`` bins; outside it is the identity,
    so inputs far outside (``|x| = 1e4``) pass through with finite values and gradients. The
    interior branch is always computed on clamped inputs, so the unused branch can produce
    no NaN gradients.

    Args:
        x: inputs, shape ``(*)``.
        params: unnormalised parameters, shape ``(*, 3K - 1)``: ``K`` width logits, ``K``
            height logits and ``K - 1`` interior derivative pre-activations.
        bound: half-width of the spline's interval.
        inverse: apply the inverse map instead.
        min_width: minimum bin width as a fraction of the interval.
        min_height: minimum bin height as a fraction of the interval.
        min_derivative: minimum derivative at the knots.

    Returns:
        ``(y, ladj)``, both of shape ``(*)``: outputs and elementwise ``log|dy/dx|``.

    Example:
        >>> import torch
        >>> x = torch.linspace(-6, 6, 5)
        >>> y, ladj = rational_quadratic_spline(x, torch.zeros(5, 3 * 4 - 1))
        >>> torch.allclose(y, x), torch.allclose(ladj, torch.zeros(5), atol=1e-6)
        (True, True)
    """
    k = (params.shape[-1] + 1) // 3
    if params.shape[-1] != 3 * k - 1 or k < 1:
        raise ValueError(f"expected params of shape (*, 3K - 1), got last dim {params.shape[-1]}")
    args = (k, bound, inverse, min_width, min_height, min_derivative)
    pm = torch.movedim(params, -1, 0)  # (3K - 1, *): parameter-major
    if (
        x.dim() >= 2
        and params.shape[:-1] == x.shape
        and not pm.is_contiguous()
        and pm.transpose(-1, -2).is_contiguous()
    ):
        # Parameters laid out (3K - 1, ..., D, B) in memory (see MADE(param_major=True)):
        # work in the transposed frame, where they are contiguous, and copy x instead.
        y, ladj = _chunked(x.transpose(-1, -2).contiguous(), pm.transpose(-1, -2), *args)
        return y.transpose(-1, -2), ladj.transpose(-1, -2)
    if params.shape[:-1] != x.shape:
        shape = torch.broadcast_shapes(x.shape, params.shape[:-1])
        x, pm = x.expand(shape), pm.expand(pm.shape[0], *shape)
    # One transposing copy to the parameter-major layout: every later op then works on
    # contiguous slabs shaped like x.
    return _chunked(x, pm.contiguous(), *args)


def _chunked(
    x: Tensor,
    p: Tensor,
    k: int,
    bound: float,
    inverse: bool,
    min_width: float,
    min_height: float,
    min_derivative: float,
) -> tuple[Tensor, Tensor]:
    """The spline of contiguous ``x`` ``(*)`` and ``p`` ``(3K - 1, *)``, chunk by chunk."""
    args = (k, bound, inverse, min_width, min_height, min_derivative)
    n = x.numel()
    if n <= 2 * CHUNK or torch.compiler.is_compiling():
        return _spline(x, p, *args)
    # Large inputs in chunks (every op is elementwise over the batch): several times faster.
    ys, ladjs = zip(
        *(
            _spline(xc, pc, *args)
            for xc, pc in zip(x.reshape(n).split(CHUNK), p.reshape(p.shape[0], n).split(CHUNK, 1))
        )
    )
    return torch.cat(ys).view(x.shape), torch.cat(ladjs).view(x.shape)


def _spline(
    x: Tensor,
    p: Tensor,
    k: int,
    bound: float,
    inverse: bool,
    min_width: float,
    min_height: float,
    min_derivative: float,
) -> tuple[Tensor, Tensor]:
    """The spline of :func:`rational_quadratic_spline` on one chunk; ``p`` is ``(3K - 1, *)``."""
    batch = x.shape
    # split, not slicing: its backward is one cat, not zero-filled copies of all parameters.
    raw_wh, raw_d = p.split([2 * k, k - 1])
    if min_width == min_height:
        wh = _knots(raw_wh.reshape(2, k, *batch), bound, min_width)  # (2, K+1, *)
    else:
        wh = torch.cat(
            [
                _knots(r.unsqueeze(0), bound, m)
                for r, m in zip(raw_wh.split(k), (min_width, min_height))
            ]
        )
    deriv = _derivatives(raw_d, min_derivative)  # (K+1, *)
    table = torch.cat([wh, deriv.unsqueeze(0)])  # (3, K+1, *): x knots, y knots, derivatives

    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)
    knots_in = table[1 if inverse else 0, 1:-1]  # (K-1, *)
    # Bin index in [0, K-1]: the number of interior knots at or below the input.
    idx = (xc.unsqueeze(0) >= knots_in).sum(dim=0, keepdim=True)  # (1, *)
    # One gather of both ends of the bin, for the x knots, y knots and derivatives.
    both = torch.cat([idx, idx + 1]).unsqueeze(0).expand(3, 2, *batch)  # (3, 2, *)
    x0, x1, y0, y1, d0, d1 = table.gather(1, both).flatten(0, 1).unbind(0)  # each (*)
    w, h = x1 - x0, y1 - y0
    s = h / w
    curv = d0 + d1 - 2.0 * s
    if not inverse:
        theta = ((xc - x0) / w).clamp(0.0, 1.0)
        t1 = theta * (1.0 - theta)
        den = s + curv * t1
        out = y0 + h * (s * theta.square() + d0 * t1) / den
    else:
        dy = xc - y0
        a = h * (s - d0) + dy * curv
        b = h * d0 - dy * curv
        c = -s * dy
        # Clamp the discriminant at the smallest normal number, not at zero: sqrt's infinite
        # gradient at 0 times the clamp's zero gradient would be NaN.
        sq = torch.sqrt((b.square() - 4.0 * a * c).clamp(min=torch.finfo(b.dtype).tiny))
        # The root in [0, 1] has two algebraically equal forms, 2c / (-b - sq) and
        # (sq - b) / 2a; each is free of cancellation for one sign of b. The min / max keep
        # the denominators away from zero (they only bind where the root would leave [0, 1]),
        # and the inner where() keeps the unused form finite, so no gradient becomes NaN.
        pos = b >= 0
        one = torch.ones_like(b)
        den_pos = torch.where(pos, torch.minimum(-b - sq, 2.0 * c), -one)  # < 0 where used
        den_neg = torch.where(pos, one, torch.maximum(2.0 * a, sq - b))  # > 0 where used
        theta = torch.where(pos, (2.0 * c) / den_pos, (sq - b) / den_neg).clamp(0.0, 1.0)
        t1 = theta * (1.0 - theta)
        den = s + curv * t1
        out = x0 + theta * w
    dnum = s.square() * (d1 * theta.square() + 2.0 * s * t1 + d0 * (1.0 - theta).square())
    ladj = torch.log(dnum) - 2.0 * torch.log(den)
    if inverse:
        ladj = -ladj
    y = torch.where(inside, out, x)
    ladj = torch.where(inside, ladj, torch.zeros_like(ladj))
    return y, ladj


__all__ = ["rational_quadratic_spline"]
