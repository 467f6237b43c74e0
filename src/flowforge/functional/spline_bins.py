"""The rational-quadratic spline of one chunk as plain torch ops: the table of knots from
the parameters, each input's bin, and the in-bin formula (forward and inverse, with or without
the log-determinant). Used by :mod:`flowforge.functional.splines`, whose autograd node
recomputes from the same pieces.

References:
    Durkan, Bekasov, Murray, Papamakarios (2019). Neural Spline Flows. arXiv:1906.04032.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowforge.functional.spline_knots import derivatives, knots


def _table(
    p: Tensor, k: int, bound: float, min_width: float, min_height: float, min_derivative: float
) -> Tensor:
    """``(3, K + 1, *)``: x knots, y knots and knot derivatives from ``p`` ``(3K - 1, *)``."""
    batch = p.shape[1:]
    # split, not slicing: its backward is one cat, not zero-filled copies of all parameters.
    raw_wh, raw_d = p.split([2 * k, k - 1])
    if min_width == min_height:
        wh = knots(raw_wh.reshape(2, k, *batch), bound, min_width)  # (2, K+1, *)
    else:
        wh = torch.cat(
            [
                knots(r.unsqueeze(0), bound, m)
                for r, m in zip(raw_wh.split(k), (min_width, min_height))
            ]
        )
    deriv = derivatives(raw_d, min_derivative)  # (K+1, *)
    return torch.cat([wh, deriv.unsqueeze(0)])


def _bin(x: Tensor, table: Tensor, bound: float, inverse: bool) -> tuple[Tensor, Tensor]:
    """Bin index ``(1, *)`` of each input and the ``(3, 2, *)`` gather index of its ends."""
    knots_in = table[1 if inverse else 0, 1:-1]  # (K-1, *)
    # Bin index in [0, K-1]: the number of interior knots at or below the (clamped) input.
    idx = (x.clamp(-bound, bound).unsqueeze(0) >= knots_in).sum(dim=0, keepdim=True)
    # One gather of both ends of the bin, for the x knots, y knots and derivatives.
    return idx, torch.cat([idx, idx + 1]).unsqueeze(0).expand(3, 2, *x.shape)


def _spline(
    x: Tensor,
    p: Tensor,
    k: int,
    bound: float,
    inverse: bool,
    min_width: float,
    min_height: float,
    min_derivative: float,
    with_ladj: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """The spline of :func:`rational_quadratic_spline` on one chunk; ``p`` is ``(3K - 1, *)``."""
    table = _table(p, k, bound, min_width, min_height, min_derivative)
    _, both = _bin(x, table, bound, inverse)
    ends = table.gather(1, both)  # (3, 2, *): x0, x1, y0, y1, d0, d1
    return _in_bin(x, ends, bound, inverse, with_ladj)


def _in_bin(
    x: Tensor, ends: Tensor, bound: float, inverse: bool, with_ladj: bool = True
) -> tuple[Tensor, Tensor | None]:
    """The spline of ``x`` given the ends ``(3, 2, *)`` of its bin: ``(y, ladj)``.

    The one formula of both paths: without ``with_ladj`` the log-determinant's terms are
    skipped and ``ladj`` is ``None``.
    """
    x0, x1, y0, y1, d0, d1 = ends.flatten(0, 1).unbind(0)  # each (*)
    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)
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
        out = x0 + theta * w
        if not with_ladj:
            return torch.where(inside, out, x), None
        t1 = theta * (1.0 - theta)
        den = s + curv * t1
    y = torch.where(inside, out, x)
    if not with_ladj:
        return y, None
    dnum = s.square() * (d1 * theta.square() + 2.0 * s * t1 + d0 * (1.0 - theta).square())
    ladj = torch.log(dnum) - 2.0 * torch.log(den)
    if inverse:
        ladj = -ladj
    ladj = torch.where(inside, ladj, torch.zeros_like(ladj))
    return y, ladj


def _full(out: tuple[Tensor, Tensor | None]) -> tuple[Tensor, Tensor]:
    """``(y, ladj)`` of a call with the log-determinant (``with_ladj=True``)."""
    y, ladj = out
    assert ladj is not None
    return y, ladj
