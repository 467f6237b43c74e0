"""Priors: any ``torch.distributions.Distribution`` over ``(D,)``, and the box-uniform helper.

A box prior (:class:`BoxUniform`, or any ``Independent(Uniform(low, high), 1)``) is recognised
by :func:`box_bounds`: the posterior is then learned in the box's unconstrained space, so no
sample ever leaves the box.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Uniform

__all__ = ["BoxUniform", "box_bounds", "check_prior"]


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
