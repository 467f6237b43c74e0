"""The standard logistic distribution over an event of any shape (NICE's prior)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from flowforge.core.bijection import sum_event
from flowforge.core.distribution import ParameterFreeDistribution


class StandardLogistic(ParameterFreeDistribution):
    """Independent standard logistic values: ``log p(z) = -sum(z + 2 softplus(-z))``.

    Each value has the density ``sigmoid(z) (1 - sigmoid(z))``, so ``sigmoid(z)`` is uniform on
    ``(0, 1)``: a flow made of :class:`~flowforge.transforms.Logit` with ``alpha = 0`` and this
    base is exactly the uniform density on ``[0, 1)^D``. Samples are drawn by inverse CDF,
    ``z = log u - log(1 - u)`` with ``u`` uniform, hence reparameterised (no parameters).
    Temperature scaling does not apply (``T z`` is not a tempered logistic).

    Args:
        event_shape: shape of one event, e.g. ``64`` or ``(1, 8, 8)``.

    References:
        Dinh, Krueger, Bengio (2015). NICE: Non-linear Independent Components Estimation.
        arXiv:1410.8516 (the logistic prior).

    Example:
        >>> import torch, flowforge as ff
        >>> base = ff.distributions.StandardLogistic(2)
        >>> round(base.log_prob(torch.zeros(1, 2)).item(), 4)  # 2 log(1/4)
        -2.7726
    """

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """``(*)`` log-density of ``z`` with shape ``(*, *event_shape)``."""
        return sum_event(-z - 2.0 * F.softplus(-z), len(self.event_shape))

    def rsample(self, shape: Sequence[int], context: Tensor | None = None) -> Tensor:
        """``(*shape, *event_shape)`` samples ``log u - log(1 - u)``, ``u ~ U(0, 1)``."""
        ref = self._ref()
        tiny = torch.finfo(ref.dtype).tiny
        u = torch.rand((*shape, *self.event_shape), dtype=ref.dtype, device=ref.device)
        u = u.clamp(tiny, 1.0 - torch.finfo(ref.dtype).eps / 2)
        return torch.log(u) - torch.log1p(-u)


__all__ = ["StandardLogistic"]
