"""Priors: any ``torch.distributions.Distribution`` over ``(D,)``, and the box-uniform helper.

A box prior (:class:`BoxUniform`, or any ``Independent(Uniform(low, high), 1)``) is recognised
by :func:`box_bounds`: the posterior is then learned in the box's unconstrained space, so no
sample ever leaves the box. Any other prior whose support is bounded coordinate by coordinate
(``Gamma``, ``LogNormal``, ``HalfNormal``, ``Beta``, ``Independent`` products of them, a
``constraints.cat`` of such supports) has its bounds read by :func:`support_bounds` from
``torch.distributions.biject_to(prior.support)``, and its posterior is learned through the
same maps (:class:`~flowforge.transforms.Bounds`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Uniform, biject_to

__all__ = ["BoxUniform", "box_bounds", "check_prior", "support_bounds"]


class BoxUniform(Independent):
    """The uniform distribution on the box ``[low, high)``, event shape ``(D,)``.

    Args:
        low: ``(D,)`` lower bounds (a sequence or a tensor).
        high: ``(D,)`` upper bounds, each above its lower bound.

    Example:
        >>> prior = BoxUniform([-1.0, 0.0], [1.0, 2.0])
        >>> prior.sample((5,)).shape, prior.event_shape
        (torch.Size([5, 2]), torch.Size([2]))
        >>> prior.log_prob(torch.tensor([[0.0, 1.0], [2.0, 1.0]])).tolist()
        [-1.3862943649291992, -inf]
    """

    def __init__(
        self,
        low: Tensor | Sequence[float],
        high: Tensor | Sequence[float],
    ) -> None:
        lo = torch.as_tensor(low, dtype=torch.get_default_dtype()).reshape(-1)
        hi = torch.as_tensor(high, dtype=lo.dtype).reshape(-1).to(lo.device)
        if lo.shape != hi.shape or lo.numel() == 0:
            raise ValueError(
                f"BoxUniform: expected low and high of one shape (D,), got {tuple(lo.shape)} "
                f"and {tuple(hi.shape)}"
            )
        if not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all() & (hi > lo).all()):
            raise ValueError(
                f"BoxUniform: expected finite bounds with high > low, got low={lo.tolist()} "
                f"and high={hi.tolist()}"
            )
        super().__init__(Uniform(lo, hi, validate_args=False), 1, validate_args=False)

    @property
    def low(self) -> Tensor:
        """``(D,)`` lower bounds."""
        return self.base_dist.low

    @property
    def high(self) -> Tensor:
        """``(D,)`` upper bounds."""
        return self.base_dist.high

    def log_prob(self, value: Tensor) -> Tensor:
        """``-sum(log(high - low))`` inside the box, ``-inf`` outside (never an error)."""
        inside = ((value >= self.low) & (value < self.high)).all(-1)
        log_volume = torch.log(self.high - self.low).sum().to(value)
        return torch.where(inside, -log_volume, value.new_tensor(-torch.inf))


def box_bounds(prior: Distribution) -> tuple[Tensor, Tensor] | None:
    """``(low, high)`` of a box prior (``Independent(Uniform, 1)`` over ``(D,)``), else ``None``."""
    if isinstance(prior, Independent) and isinstance(prior.base_dist, Uniform):
        low, high = prior.base_dist.low, prior.base_dist.high
        if prior.reinterpreted_batch_ndims == 1 and low.dim() == 1 and low.shape == high.shape:
            return low.detach(), high.detach()
    return None


def support_bounds(prior: Distribution) -> tuple[Tensor, Tensor] | None:
    """``(low, high)`` per coordinate of a prior's support (``-inf`` / ``inf`` where a side is
    open), or ``None`` when the support is the whole space (or the prior names no support).

    The bounds are the images of ``-inf`` and ``inf`` under ``biject_to(prior.support)``, the
    map torch itself uses from the real line onto the support, so any support it maps
    coordinate by coordinate is read (intervals, half-lines, ``independent`` and ``cat``
    combinations).

    Raises:
        ValueError: one line: a discrete support, or one that is not a product of intervals
            (a simplex, a matrix space).

    Example:
        >>> from torch.distributions import Gamma, Independent
        >>> low, high = support_bounds(Independent(Gamma(torch.ones(2), torch.ones(2)), 1))
        >>> low.tolist(), high.tolist()
        ([0.0, 0.0], [inf, inf])
    """
    d = check_prior(prior)
    try:
        support = prior.support
    except NotImplementedError:  # a user's distribution that names no support
        return None
    if support is None:
        return None
    try:
        to_support = biject_to(support)
    except NotImplementedError:
        raise ValueError(
            f"expected a prior with a continuous support, got {support} (no bijection from "
            "the real line onto it)"
        ) from None
    if tuple(to_support.forward_shape((d,))) != (d,) or not to_support.bijective:
        raise ValueError(
            f"expected a prior whose support is bounded coordinate by coordinate, got {support}"
        )
    with torch.no_grad():
        inf = torch.full((d,), torch.inf, dtype=torch.float64)
        a, b = to_support(-inf), to_support(inf)
    # torch's sigmoid stops a hair inside (0, 1): snap to the float32 value next to the bound
    low, high = (_snap(v) for v in (torch.minimum(a, b), torch.maximum(a, b)))
    if bool(torch.isnan(low).any() | torch.isnan(high).any() | (high <= low).any()):
        raise ValueError(f"expected a prior whose support has per-coordinate bounds, got {support}")
    if bool(torch.isinf(low).all() & torch.isinf(high).all()):
        return None
    return low, high


def _snap(bound: Tensor) -> Tensor:
    """``bound`` (float64) rounded to float32 where that moves it by under ``1e-12`` of its
    size (the clipping of ``SigmoidTransform``), else as it is; in the default dtype."""
    near = bound.float().double()
    close = (near - bound).abs() <= 1e-12 * bound.abs().clamp(min=1.0)
    return torch.where(close | torch.isinf(bound), near, bound).to(torch.get_default_dtype())


def check_prior(prior: object) -> int:
    """The dimension ``D`` of a prior over ``(D,)``.

    Raises:
        TypeError: ``prior`` has no ``sample`` / ``log_prob``.
        ValueError: its event shape is not ``(D,)``.
    """
    if not (
        callable(getattr(prior, "sample", None)) and callable(getattr(prior, "log_prob", None))
    ):
        raise TypeError(
            f"expected a prior with sample and log_prob (a torch Distribution), got "
            f"{type(prior).__name__}"
        )
    event = tuple(getattr(prior, "event_shape", ()))
    if len(event) != 1:
        raise ValueError(
            f"expected a prior over vectors, event shape (D,), got {event}; wrap a scalar or "
            "batched prior in torch.distributions.Independent or use BoxUniform"
        )
    return int(event[0])
