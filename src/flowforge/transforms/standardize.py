"""A fixed per-feature affine bijection: the standardisation of user and tabular data."""

from __future__ import annotations

import torch
from torch import Tensor

from flowforge.core.bijection import Bijection, Compose, batch_shape_of
from flowforge.core.defensive import DefensiveMixture
from flowforge.core.flow import Flow


class Standardize(Bijection):
    """``z = (x - mean) / std`` with constant (non-trainable) ``mean`` and ``std``.

    Put first in a flow's bijection, it makes the flow a density of the data in its original
    units: ``log p(x) = log q((x - mean) / std) - sum(log std)``.

    Args:
        mean: ``(D,)`` per-feature mean.
        std: ``(D,)`` per-feature standard deviation, positive.

    Example:
        >>> b = Standardize(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 1.0]))
        >>> z, ladj = b(torch.tensor([[3.0, 1.0]]))
        >>> z.tolist(), round(ladj.item(), 4)
        ([[1.0, 1.0]], -0.6931)
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__(tuple(mean.shape))
        if mean.shape != std.shape or not bool((std > 0).all()):
            raise ValueError(
                f"expected mean and std of one shape with std > 0, got {tuple(mean.shape)} "
                f"and {tuple(std.shape)}"
            )
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("std", std.detach().clone().float())

    def _ladj(self, x: Tensor) -> Tensor:
        batch = batch_shape_of(x, self.event_shape)
        return (-torch.log(self.std.to(x)).sum()).expand(batch)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        ladj = self._ladj(x)  # checks the shape first
        return (x - self.mean.to(x)) / self.std.to(x), ladj

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        ladj = -self._ladj(z)
        return z * self.std.to(z) + self.mean.to(z), ladj


__all__ = ["Standardize", "standardized_view"]


class _Standardized(Bijection):
    """A ``Standardize`` whose input is already standardised: the identity, with the
    log-Jacobian ``-sum(log std)`` of the standardisation and the same buffers (shared)."""

    mean: Tensor
    std: Tensor

    def __init__(self, standardize: Standardize) -> None:
        super().__init__(standardize.event_shape)
        self.register_buffer("mean", standardize.mean)
        self.register_buffer("std", standardize.std)

    def _ladj(self, x: Tensor) -> Tensor:
        batch = batch_shape_of(x, self.event_shape)
        return (-torch.log(self.std.to(x)).sum()).expand(batch)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x, self._ladj(x)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return z, -self._ladj(z)


def standardized_view(flow: torch.nn.Module) -> Flow | DefensiveMixture | None:
    """A view of ``flow`` whose leading ``Standardize`` takes standardised rows (an identity with
    the standardisation's log-Jacobian and buffers), or ``None`` when ``flow`` has none.

    The view shares every parameter and buffer with ``flow`` and has the same state-dict keys.
    Rows standardised in float64 (``(x - mean) / std`` with the flow's own statistics) and only
    then cast get the same log-density as ``flow`` would give ``x``, without float32 rounding of
    ``x`` itself. A defensive mixture gives the mixture of its components' views.
    """
    if isinstance(flow, DefensiveMixture):  # both components start with the same Standardize
        return flow.map_components(standardized_view)
    bij = getattr(flow, "bijection", None)
    members: list[Bijection] = list(bij.chain()) if isinstance(bij, Compose) else []
    if not isinstance(flow, Flow) or len(members) < 2 or not isinstance(members[0], Standardize):
        return None
    view = Compose([_Standardized(members[0]), *members[1:]])
    return Flow(view, flow.base, context=flow.context)
