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


def _knots(raw: Tensor, bound: float, minimum: float) -> tuple[Tensor, Tensor]:
    """Bin sizes and knot positions on ``[-bound, bound]`` from unnormalised logits.

    Returns:
        ``(sizes, knots)`` of shapes ``(*, K)`` and ``(*, K + 1)``; every size is at least
        ``2 * bound * minimum`` and the knots start at ``-bound`` and end at ``bound``.
    """
    k = raw.shape[-1]
    frac = minimum + (1.0 - minimum * k) * torch.softmax(raw, dim=-1)
    cum = torch.cumsum(frac, dim=-1)
    knots = F.pad(2.0 * bound * cum - bound, (1, 0), value=-bound)
    # Pin the last knot exactly to the bound (cumsum may round), and derive sizes from knots
    # so that knots[k] + sizes[k] == knots[k + 1] exactly.
    knots = torch.cat([knots[..., :-1], knots.new_full((*knots.shape[:-1], 1), bound)], dim=-1)
    return knots[..., 1:] - knots[..., :-1], knots


def _derivatives(raw: Tensor, minimum: float) -> Tensor:
    """Knot derivatives ``(*, K + 1)``: interior from ``raw`` ``(*, K - 1)``, 1 at both ends.

    A zero ``raw`` gives derivative 1, so zero parameters make the spline the identity.
    """
    shift = math.log(math.expm1(1.0 - minimum))
    inner = minimum + F.softplus(raw + shift)
    return F.pad(inner, (1, 1), value=1.0)


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
        >>> torch.allclose(y, x), torch.allclose(ladj, torch.zeros(5))
        (True, True)
    """
    k = (params.shape[-1] + 1) // 3
    if params.shape[-1] != 3 * k - 1 or k < 1:
        raise ValueError(f"expected params of shape (*, 3K - 1), got last dim {params.shape[-1]}")
    raw_w, raw_h, raw_d = params[..., :k], params[..., k : 2 * k], params[..., 2 * k :]
    widths, xk = _knots(raw_w, bound, min_width)  # (*, K), (*, K+1)
    heights, yk = _knots(raw_h, bound, min_height)
    deriv = _derivatives(raw_d, min_derivative)  # (*, K+1)

    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)
    knots_in = yk if inverse else xk
    # Bin index in [0, K-1]: the number of interior knots at or below the input.
    idx = (xc.unsqueeze(-1) >= knots_in[..., 1:-1]).sum(dim=-1, keepdim=True)  # (*, 1)

    def pick(t: Tensor) -> Tensor:
        return t.gather(-1, idx).squeeze(-1)

    x0, w, y0, h = pick(xk), pick(widths), pick(yk), pick(heights)
    d0, d1 = pick(deriv[..., :-1]), pick(deriv[..., 1:])
    s = h / w
    if not inverse:
        theta = ((xc - x0) / w).clamp(0.0, 1.0)
        t1 = theta * (1.0 - theta)
        den = s + (d0 + d1 - 2.0 * s) * t1
        out = y0 + h * (s * theta.square() + d0 * t1) / den
    else:
        dy = xc - y0
        a = h * (s - d0) + dy * (d0 + d1 - 2.0 * s)
        b = h * d0 - dy * (d0 + d1 - 2.0 * s)
        c = -s * dy
        disc = (b.square() - 4.0 * a * c).clamp(min=0.0)
        theta = ((2.0 * c) / (-b - torch.sqrt(disc))).clamp(0.0, 1.0)
        t1 = theta * (1.0 - theta)
        den = s + (d0 + d1 - 2.0 * s) * t1
        out = x0 + theta * w
    dnum = s.square() * (d1 * theta.square() + 2.0 * s * t1 + d0 * (1.0 - theta).square())
    ladj = torch.log(dnum) - 2.0 * torch.log(den)
    if inverse:
        ladj = -ladj
    y = torch.where(inside, out, x)
    ladj = torch.where(inside, ladj, torch.zeros_like(ladj))
    return y, ladj


__all__ = ["rational_quadratic_spline"]
