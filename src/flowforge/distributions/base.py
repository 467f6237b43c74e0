"""Base distributions of flows: the density of the latent variable ``z``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowforge.core.bijection import sum_event
from flowforge.core.distribution import BaseDistribution, ParameterFreeDistribution

_LOG_2PI = math.log(2 * math.pi)


class StandardNormal(ParameterFreeDistribution):
    """The standard normal ``N(0, I)`` over an event of any shape.

    Args:
        event_shape: shape of one event, e.g. ``2`` or ``(1, 8, 8)``.

    Example:
        >>> import torch, flowforge as ff
        >>> base = ff.distributions.StandardNormal(2)
        >>> round(base.log_prob(torch.zeros(1, 2)).item(), 4)  # -log(2 pi)
        -1.8379
    """

    tempered_by_scaling = True

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        d = math.prod(self.event_shape)
        return -0.5 * sum_event(z.square(), len(self.event_shape)) - 0.5 * d * _LOG_2PI

    def rsample(self, shape: Sequence[int], context: Tensor | None = None) -> Tensor:
        return self._noise(shape)


class DiagNormal(BaseDistribution):
    """A diagonal normal with learned mean and log standard deviation.

    Args:
        event_shape: shape of one event.
    """

    def __init__(self, event_shape: int | Sequence[int]) -> None:
        super().__init__(event_shape)
        self.loc = nn.Parameter(torch.zeros(self.event_shape))
        self.log_scale = nn.Parameter(torch.zeros(self.event_shape))

    def _ref(self) -> Tensor:
        return self.loc

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        u = (z - self.loc) * torch.exp(-self.log_scale)
        elem = -0.5 * u.square() - self.log_scale - 0.5 * _LOG_2PI
        return sum_event(elem, len(self.event_shape))

    def rsample(self, shape: Sequence[int], context: Tensor | None = None) -> Tensor:
        return self.loc + torch.exp(self.log_scale) * self._noise(shape)


class GaussianMixture(BaseDistribution):
    """A mixture of ``components`` diagonal Gaussians with learned weights, means and scales.

    Sampling picks a component (not differentiable) and draws a reparameterised sample
    from it, so gradients flow to the means and scales.

    Args:
        features: dimension ``D`` of the (vector) event.
        components: number of mixture components ``K``.
        spread: standard deviation of the initial component means.
    """

    def __init__(self, features: int, components: int = 8, spread: float = 1.0) -> None:
        super().__init__(features)
        if components < 1:
            raise ValueError(f"expected components >= 1, got {components}")
        self.logits = nn.Parameter(torch.zeros(components))
        self.loc = nn.Parameter(spread * torch.randn(components, features))
        self.log_scale = nn.Parameter(torch.zeros(components, features))

    def _ref(self) -> Tensor:
        return self.loc

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        u = (z.unsqueeze(-2) - self.loc) * torch.exp(-self.log_scale)  # (*, K, D)
        comp = (-0.5 * u.square() - self.log_scale - 0.5 * _LOG_2PI).sum(-1)  # (*, K)
        return torch.logsumexp(comp + F.log_softmax(self.logits, -1), dim=-1)

    def rsample(self, shape: Sequence[int], context: Tensor | None = None) -> Tensor:
        n = math.prod(shape)
        idx = torch.multinomial(F.softmax(self.logits.detach(), -1), n, replacement=True)
        eps = self._noise((n,))
        z = self.loc[idx] + torch.exp(self.log_scale[idx]) * eps
        return z.reshape(*shape, *self.event_shape)


class ConditionalDiagNormal(BaseDistribution):
    """A diagonal normal whose mean and log-scale are a function of a context vector.

    Args:
        features: dimension ``D`` of the event.
        context: dimension ``C`` of the context.
        net: a module mapping ``(*, C)`` to ``(*, 2 D)``; defaults to a linear layer
            initialised at the standard normal.
    """

    def __init__(self, features: int, *, context: int, net: nn.Module | None = None) -> None:
        super().__init__(features)
        if net is None:
            lin = nn.Linear(context, 2 * features)
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
            net = lin
        self.net = net
        self.context = int(context)

    def _ref(self) -> Tensor:
        return next(self.net.parameters())

    def _params(self, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if context is None:
            raise ValueError("ConditionalDiagNormal needs a context, got None")
        loc, log_scale = self.net(context).chunk(2, dim=-1)
        return loc, log_scale.clamp(-10.0, 10.0)

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        loc, log_scale = self._params(context)
        u = (z - loc) * torch.exp(-log_scale)
        return (-0.5 * u.square() - log_scale - 0.5 * _LOG_2PI).sum(-1)

    def rsample(self, shape: Sequence[int], context: Tensor | None = None) -> Tensor:
        loc, log_scale = self._params(context)
        return loc + torch.exp(log_scale) * self._noise(shape)


__all__ = [
    "BaseDistribution",
    "ConditionalDiagNormal",
    "DiagNormal",
    "GaussianMixture",
    "StandardNormal",
]
