"""The map from per-coordinate bounds (an interval, a half-line or the whole line) to the real
line: the unconstrained space of a prior with an elementwise support."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from flowforge.core.bijection import Bijection, batch_shape_of

__all__ = ["Bounds"]


class Bounds(Bijection):
    """``theta`` in ``(low_i, high_i)`` per coordinate to ``eta`` on the real line, where either
    bound may be infinite; the maps are the ones ``torch.distributions.biject_to`` picks:

    - both bounds finite: ``eta = logit((theta - low) / (high - low))``;
    - only ``low``: ``eta = log(theta - low)`` (``biject_to(positive)``'s exp, shifted);
    - only ``high``: ``eta = log(high - theta)``;
    - neither: ``eta = theta``.

    ``forward`` (``theta -> eta``) returns ``log |d eta / d theta|`` summed over the
    coordinates, so a density of ``eta`` becomes one of ``theta`` in its support. ``theta`` on
    or beyond a finite bound has no image (``inf`` or NaN: the caller keeps such rows out);
    ``eta`` so large that ``exp`` would overflow is capped there.

    Args:
        low: ``(D,)`` lower bounds, ``-inf`` for none.
        high: ``(D,)`` upper bounds, ``inf`` for none, each above its lower bound.

    Example:
        >>> b = Bounds(torch.tensor([0.0, -1.0, -math.inf]), torch.tensor([math.inf, 1.0, 2.0]))
        >>> eta, ladj = b(torch.tensor([[1.0, 0.0, 1.0]]))
        >>> eta.tolist(), round(ladj.item(), 4)
        ([[0.0, 0.0, 0.0]], 0.6931)
        >>> b.inverse(eta)[0].tolist()
        [[1.0, 0.0, 1.0]]
    """

    low: Tensor
    high: Tensor

    def __init__(self, low: Tensor, high: Tensor) -> None:
        low = torch.as_tensor(low).detach().reshape(-1)
        high = torch.as_tensor(high).detach().reshape(-1)
        super().__init__(tuple(low.shape))
        if low.shape != high.shape or bool(torch.isnan(low).any() | torch.isnan(high).any()):
            raise ValueError(
                f"Bounds: expected low and high of one shape (D,) without NaN, got "
                f"{tuple(low.shape)} and {tuple(high.shape)}"
            )
        if not bool((high > low).all()) or bool(
            (low == math.inf).any() | (high == -math.inf).any()
        ):
            raise ValueError(
                f"Bounds: expected high > low in every coordinate, got low={low.tolist()} and "
                f"high={high.tolist()}"
            )
        self.register_buffer("low", low.clone().float())
        self.register_buffer("high", high.clone().float())

    def _parts(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Masks (interval, lower only, upper only) and finite stand-ins for the bounds."""
        low, high = self.low.to(like), self.high.to(like)
        lo_f, hi_f = torch.isfinite(low), torch.isfinite(high)
        both = lo_f & hi_f
        lo_s = torch.where(lo_f, low, torch.zeros_like(low))
        hi_s = torch.where(hi_f, high, torch.ones_like(high))
        return both, lo_f & ~hi_f, hi_f & ~lo_f, lo_s, hi_s, hi_s - lo_s

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch_shape_of(x, self.event_shape)
        both, lo_only, hi_only, lo, hi, width = self._parts(x)
        one = torch.ones_like(x)
        u = torch.where(both, (x - lo) / width, 0.5 * one)
        log_u, log_1mu = torch.log(u), torch.log1p(-u)
        r = torch.where(lo_only, x - lo, torch.where(hi_only, hi - x, one))
        log_r = torch.log(r)
        eta = torch.where(both, log_u - log_1mu, torch.where(lo_only | hi_only, log_r, x))
        elem = torch.where(
            both,
            -torch.log(width) - log_u - log_1mu,
            torch.where(lo_only | hi_only, -log_r, torch.zeros_like(x)),
        )
        return eta, elem.sum(-1)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch_shape_of(z, self.event_shape)
        both, lo_only, hi_only, lo, hi, width = self._parts(z)
        half = lo_only | hi_only
        e = torch.where(half, z, torch.zeros_like(z))
        e = e.clamp(max=math.log(torch.finfo(z.dtype).max) - 1.0)  # exp stays finite
        grow = torch.exp(e)
        theta = torch.where(
            both,
            lo + width * torch.sigmoid(z),
            torch.where(lo_only, lo + grow, torch.where(hi_only, hi - grow, z)),
        )
        elem = torch.where(
            both,
            torch.log(width) - F.softplus(-z) - F.softplus(z),
            torch.where(half, e, torch.zeros_like(z)),
        )
        return theta, elem.sum(-1)

    def extra_repr(self) -> str:
        return f"low={self.low.tolist()}, high={self.high.tolist()}"
