"""Radial flows: ``x = z + beta (z - z0) / (alpha + |z - z0|)``, sampling direction."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from flowforge.core.bijection import Bijection, batch_shape_of
from flowforge.transforms.amortised import AmortisedParameters


class Radial(Bijection):
    """A radial layer, contracting or expanding around a centre ``z0``: ``z -> x``.

    ``x = z + beta h(r) (z - z0)`` with ``r = |z - z0|``, ``h(r) = 1 / (alpha + r)``,
    ``alpha = softplus(raw_alpha) > 0`` and ``beta = -alpha + softplus(raw_beta) > -alpha``,
    the constraint that keeps it invertible. Its log-determinant is analytic,
    ``(D - 1) log(1 + beta h) + log(1 + beta alpha h^2)``.

    The density direction is exact too: ``x - z0`` is ``z - z0`` scaled by
    ``1 + beta h(r) > 0``, so ``s = |x - z0| = r + beta r / (alpha + r)``, a quadratic in
    ``r`` with one positive root, ``r^2 + (alpha + beta - s) r - alpha s = 0`` (taken in its
    cancellation-free form); then ``z = z0 + (x - z0) (alpha + r) / (alpha + r + beta)``.

    Starts as the identity (``beta = 0``) around a random centre.

    Args:
        features: dimension ``D``; events have shape ``(*, D)``.
        context: size ``C`` of a context ``(*, C)`` that shifts ``z0``, ``alpha``, ``beta``
            through a network (amortised inference); 0: unconditional.
        hidden: hidden sizes of that network.

    References:
        Rezende, Mohamed (2015). Variational Inference with Normalizing Flows.
        arXiv:1505.05770.

    Example:
        >>> import torch
        >>> layer = Radial(2).double()
        >>> with torch.no_grad():
        ...     layer.params.raw[layer.params.slot("beta")] = 1.5  # beta > 0: expanding
        >>> z = torch.randn(5, 2, dtype=torch.float64)
        >>> x, ladj = layer.inverse(z)
        >>> z2, ladj2 = layer(x)
        >>> torch.allclose(z2, z), torch.allclose(ladj2, -ladj)
        (True, True)
    """

    def __init__(self, features: int, *, context: int = 0, hidden: Sequence[int] = (64,)) -> None:
        super().__init__((features,))
        d = int(features)
        alpha = torch.ones(1)
        raw_alpha = alpha.expm1().log()  # softplus^-1(1)
        init = {"z0": torch.randn(d), "alpha": raw_alpha, "beta": raw_alpha.clone()}  # beta = 0
        self.params = AmortisedParameters(
            {"z0": (d,), "alpha": (1,), "beta": (1,)}, init, context=context, hidden=hidden
        )
        self.context = int(context)

    def alpha_beta(self, context: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``z0``, ``alpha > 0`` and ``beta > -alpha``: ``(*, D)``, ``(*, 1)``, ``(*, 1)``."""
        p = self.params(context if self.context else None)
        alpha = F.softplus(p["alpha"])
        return p["z0"], alpha, F.softplus(p["beta"]) - alpha

    def _ladj(self, r: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
        h = 1.0 / (alpha + r)  # (*, 1)
        d = self.event_shape[0]
        return ((d - 1) * torch.log1p(beta * h) + torch.log1p(beta * alpha * h * h)).squeeze(-1)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x = z + beta (z - z0) / (alpha + r)``; returns ``(x, log|det dx/dz|)``."""
        batch_shape_of(z, self.event_shape)
        z0, alpha, beta = self.alpha_beta(context)
        diff = z - z0  # (*, D)
        r = diff.norm(dim=-1, keepdim=True)  # (*, 1)
        x = z + beta * diff / (alpha + r)
        return x, self._ladj(r, alpha, beta).expand(x.shape[:-1])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``z`` from ``x`` in closed form (the positive root of a quadratic in ``r``).

        Returns:
            ``(z, log|det dz/dx|)``, shapes ``(*, D)`` and ``(*)``.
        """
        batch_shape_of(x, self.event_shape)
        z0, alpha, beta = self.alpha_beta(context)
        diff = x - z0  # (*, D)
        s = diff.norm(dim=-1, keepdim=True)  # |x - z0| = r (1 + beta / (alpha + r)), (*, 1)
        q = alpha + beta - s
        disc = torch.sqrt(q * q + 4.0 * alpha * s)
        pos = q > 0
        # r = (disc - q) / 2, written without cancellation where q > 0.
        r = torch.where(pos, 2.0 * alpha * s / torch.where(pos, q + disc, 1.0), (disc - q) / 2)
        z = z0 + diff * (alpha + r) / (alpha + r + beta)
        return z, -self._ladj(r, alpha, beta).expand(z.shape[:-1])

    def extra_repr(self) -> str:
        return f"features={self.event_shape[0]}, context={self.context}"


__all__ = ["Radial"]
