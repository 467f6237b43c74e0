"""Variational objectives: fit a flow ``q`` to an unnormalised log-density ``log p~``.

An objective is a callable ``objective(flow, log_target, samples, context=None) -> VILoss``:
it draws reparameterised samples from the flow (``sample_and_log_prob``, one pass for the
sampling-direction flows and IAF), scores them under the target and returns the scalar to
minimise with named terms to log. ``log_target`` maps ``(*, D)`` to ``(*)``; with a context
``(B, C)`` the samples have shape ``(samples, B, D)`` and the callable sees that shape.

All bounds use the log importance weights ``log w = log p~(x) - log q(x)``:
``ELBO = E_q[log w] <= log Z`` and ``IWAE_K = E[log (1/K) sum_k w_k]``, which increases
with ``K`` towards ``log Z``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor, nn

from flowforge.core.flow import Flow

LogDensity = Callable[[Tensor], Tensor]

__all__ = ["ELBO", "IWAE", "LogDensity", "PathDerivativeELBO", "VILoss", "VariationalObjective"]


@dataclass(frozen=True)
class VILoss:
    """What a variational objective returns for one step.

    Attributes:
        value: the scalar (shape ``()``) to minimise; it carries the graph.
        terms: named scalars to log beside it (e.g. ``elbo``), never backpropagated.
    """

    value: Tensor
    terms: Mapping[str, Tensor] = field(default_factory=dict)


class VariationalObjective(Protocol):
    """``objective(flow, log_target, samples, context=None) -> VILoss``."""

    def __call__(
        self, flow: Flow, log_target: LogDensity, samples: int, context: Tensor | None = None
    ) -> VILoss:
        """The loss of ``flow`` against ``log_target`` from ``samples`` draws."""
        ...


class ELBO:
    """Reverse KL: minimise ``-E_q[log p~(x) - log q(x)]`` with reparameterised samples.

    The value is the negative evidence lower bound, ``KL(q || p) - log Z``; its gradient is
    the reparameterisation (pathwise) gradient, score term included.

    References:
        Kingma, Welling (2014). Auto-Encoding Variational Bayes. arXiv:1312.6114.
        Rezende, Mohamed (2015). Variational Inference with Normalizing Flows.
        arXiv:1505.05770.

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.flows.Planar(features=2, transforms=2)
        >>> loss = ELBO()(flow, lambda x: -0.5 * x.pow(2).sum(-1), samples=8)
        >>> loss.value.shape, sorted(loss.terms)
        (torch.Size([]), ['elbo'])
    """

    def __call__(
        self, flow: Flow, log_target: LogDensity, samples: int, context: Tensor | None = None
    ) -> VILoss:
        x, log_q = flow.sample_and_log_prob(samples, context)
        elbo = (log_target(x) - log_q).mean()
        return VILoss(-elbo, {"elbo": elbo.detach()})

    def __repr__(self) -> str:
        return "ELBO()"


class _LogProb(nn.Module):
    def __init__(self, flow: Flow) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x: Tensor, context: Tensor | None) -> Tensor:
        return self.flow.log_prob(x, context)


def frozen_log_prob(flow: Flow, x: Tensor, context: Tensor | None = None) -> Tensor:
    """``log q(x)`` with the flow's parameters held constant: gradients flow to ``x`` only.

    Evaluated in the density direction (``flow.log_prob``), so it needs the flow's
    ``forward``: exact for every flowforge bijection, numerical (root finds) for planar,
    Sylvester; ``D`` passes per layer for IAF.

    Args:
        flow: the flow.
        x: points ``(*, D)``, possibly on a graph.
        context: ``(*, C)`` for a conditional flow.

    Returns:
        ``(*)``.
    """
    frozen = {f"flow.{k}": v.detach() for k, v in flow.named_parameters()}
    out = torch.func.functional_call(_LogProb(flow), frozen, (x, context))
    assert isinstance(out, Tensor)
    return out


class PathDerivativeELBO:
    """The ELBO with the path-derivative ("sticking the landing") gradient.

    Same value as :class:`ELBO`; the gradient drops the score term ``E_q[d/dtheta log
    q_theta(x)]`` (zero in expectation) by evaluating ``log q`` with the parameters held
    constant at the reparameterised sample, so when ``q`` equals the target the gradient
    is exactly zero for every sample: the estimator's variance vanishes at the optimum.
    It needs the flow's density direction (see :func:`frozen_log_prob`), one extra pass.

    References:
        Roeder, Wu, Duvenaud (2017). Sticking the Landing: Simple, Lower-Variance Gradient
        Estimators for Variational Inference. arXiv:1703.09194.

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.flows.Radial(features=2, transforms=2)
        >>> loss = PathDerivativeELBO()(flow, lambda x: -0.5 * x.pow(2).sum(-1), samples=8)
        >>> loss.value.shape, sorted(loss.terms)
        (torch.Size([]), ['elbo'])
    """

    def __call__(
        self, flow: Flow, log_target: LogDensity, samples: int, context: Tensor | None = None
    ) -> VILoss:
        x, log_q = flow.sample_and_log_prob(samples, context)
        try:
            log_q_stopped = frozen_log_prob(flow, x, context)
        except NotImplementedError as err:
            raise NotImplementedError(
                "the path-derivative ELBO evaluates log q at the samples with the parameters "
                f"held constant, which needs the flow's density (forward) direction: {err}"
            ) from err
        log_p = log_target(x)
        surrogate = (log_p - log_q_stopped).mean()
        return VILoss(-surrogate, {"elbo": (log_p - log_q).mean().detach()})

    def __repr__(self) -> str:
        return "PathDerivativeELBO()"


class IWAE:
    """The importance-weighted bound with ``K`` samples per estimate.

    ``IWAE_K = E[log (1/K) sum_k w_k]`` with ``w_k = p~(x_k) / q(x_k)``: ``ELBO = IWAE_1 <=
    IWAE_K <= IWAE_{K+1} <= log Z``. Each step averages ``samples`` independent estimates
    (``K * samples`` draws).

    Args:
        k: the number ``K`` of importance samples per estimate.

    References:
        Burda, Grosse, Salakhutdinov (2016). Importance Weighted Autoencoders.
        arXiv:1509.00519.

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.flows.Planar(features=2, transforms=2)
        >>> loss = IWAE(k=4)(flow, lambda x: -0.5 * x.pow(2).sum(-1), samples=8)
        >>> sorted(loss.terms)
        ['elbo', 'iwae']
    """

    def __init__(self, k: int = 8) -> None:
        if k < 1:
            raise ValueError(f"IWAE: expected k >= 1, got {k}")
        self.k = int(k)

    def __call__(
        self, flow: Flow, log_target: LogDensity, samples: int, context: Tensor | None = None
    ) -> VILoss:
        x, log_q = flow.sample_and_log_prob((self.k, samples), context)  # (K, n, [B,] D)
        log_w = log_target(x) - log_q  # (K, n, [B])
        bound = (torch.logsumexp(log_w, 0) - math.log(self.k)).mean()
        return VILoss(-bound, {"iwae": bound.detach(), "elbo": log_w.mean().detach()})

    def __repr__(self) -> str:
        return f"IWAE(k={self.k})"
