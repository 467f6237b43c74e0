"""Planar flows: ``x = z + u_hat h(w.z + b)``, defined in the sampling direction."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from flowforge.core.bijection import Bijection, batch_shape_of
from flowforge.functional.scalar_root import Activation, solve_unit_plus_activation
from flowforge.transforms.amortised import AmortisedParameters

# softplus(LOG_E_MINUS_1) = 1: the w.u at which the reparameterisation leaves u unchanged.
LOG_E_MINUS_1 = math.log(math.e - 1.0)


def planar_u_hat(w: Tensor, u: Tensor) -> Tensor:
    """The invertibility-preserving reparameterisation of ``u``.

    ``u_hat = u + (m(w.u) - w.u) w / ||w||^2`` with ``m(a) = -1 + softplus(a)``, so that
    ``w.u_hat = m(w.u) > -1``: with ``h' in (0, 1]`` the layer is then invertible.

    Args:
        w: ``(*, D)``.
        u: ``(*, D)``.

    Returns:
        ``u_hat``, shape ``(*, D)``.

    Example:
        >>> import torch
        >>> w, u = torch.tensor([2.0, 0.0]), torch.tensor([-3.0, 1.0])
        >>> u_hat = planar_u_hat(w, u)
        >>> bool((w * u_hat).sum() > -1), u_hat[1].item()
        (True, 1.0)
    """
    wu = (w * u).sum(-1, keepdim=True)  # (*, 1)
    w2 = (w * w).sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)  # ||w||^2
    return u + (F.softplus(wu) - 1.0 - wu) * w / w2


class Planar(Bijection):
    """A planar layer, ``x = z + u_hat h(w.z + b)``: sampling direction ``z -> x``.

    Its log-determinant is analytic, ``log|1 + h'(w.z + b) w.u_hat|`` with
    ``w.u_hat = -1 + softplus(w.u) > -1`` (see :func:`planar_u_hat`), so sampling with
    ``sample_and_log_prob`` is one pass. The density direction ``x -> z`` has no closed form;
    it reduces to one scalar equation along ``w``: with ``a = w.z + b``,
    ``a + (w.u_hat) h(a) = w.x + b``, strictly increasing in ``a``, solved by bracketed Newton
    to rounding (exactly for the leaky ReLU, piecewise linear); then ``z = x - u_hat h(a)``
    and the log-determinant is the exact one at the root. Gradients through that direction
    follow the implicit function theorem.

    Starts near the identity (``u_hat`` small, ``w`` a random unit vector).

    Args:
        features: dimension ``D``; events have shape ``(*, D)``.
        context: size ``C`` of a context ``(*, C)`` that shifts ``w``, ``u``, ``b`` through a
            network (amortised inference); 0: unconditional.
        hidden: hidden sizes of that network.
        activation: ``"tanh"`` or ``"leaky_relu"``.
        slope: the leaky ReLU's negative slope, in ``(0, 1]``.

    References:
        Rezende, Mohamed (2015). Variational Inference with Normalizing Flows.
        arXiv:1505.05770 (the layer, and the reparameterisation of ``u`` in its appendix).

    Example:
        >>> import torch
        >>> layer = Planar(3)
        >>> z = torch.randn(4, 3, dtype=torch.float64)
        >>> layer = layer.double()
        >>> x, ladj = layer.inverse(z)
        >>> z2, ladj2 = layer(x)
        >>> torch.allclose(z2, z), torch.allclose(ladj2, -ladj)
        (True, True)
    """

    def __init__(
        self,
        features: int,
        *,
        context: int = 0,
        hidden: Sequence[int] = (64,),
        activation: str = "tanh",
        slope: float = 0.2,
    ) -> None:
        super().__init__((features,))
        self.activation = Activation(activation, slope)
        d = int(features)
        w = torch.randn(d)
        w = w / w.norm()
        u = LOG_E_MINUS_1 * w + 0.01 * torch.randn(d)  # u_hat ~ 0: near the identity
        self.params = AmortisedParameters(
            {"w": (d,), "u": (d,), "b": (1,)}, {"w": w, "u": u}, context=context, hidden=hidden
        )
        self.context = int(context)

    def _params(self, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``w``, ``u_hat``, ``b`` and ``c = w.u_hat``: ``(*, D)``, ``(*, D)``, ``(*, 1)``, ``(*, 1)``."""
        p = self.params(context if self.context else None)
        w, u, b = p["w"], p["u"], p["b"]
        u_hat = planar_u_hat(w, u)
        c = F.softplus((w * u).sum(-1, keepdim=True)) - 1.0  # = w.u_hat, exactly > -1
        return w, u_hat, b, c

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x = z + u_hat h(w.z + b)``; returns ``(x, log|det dx/dz|)``, ``(*, D)`` and ``(*)``."""
        batch_shape_of(z, self.event_shape)
        w, u_hat, b, c = self._params(context)
        a = (w * z).sum(-1, keepdim=True) + b  # (*, 1)
        x = z + u_hat * self.activation(a)
        ladj = torch.log1p(c * self.activation.derivative(a)).squeeze(-1)
        return x, ladj.expand(x.shape[:-1])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``z`` with ``x = z + u_hat h(w.z + b)``, by a scalar root find along ``w``.

        Returns:
            ``(z, log|det dz/dx|)``, shapes ``(*, D)`` and ``(*)``.
        """
        batch_shape_of(x, self.event_shape)
        w, u_hat, b, c = self._params(context)
        y = (w * x).sum(-1, keepdim=True) + b  # w.x + b = a + c h(a), (*, 1)
        a = solve_unit_plus_activation(
            y, c, torch.ones_like(c), torch.zeros_like(c), self.activation
        )
        z = x - u_hat * self.activation(a)
        ladj = -torch.log1p(c * self.activation.derivative(a)).squeeze(-1)
        return z, ladj.expand(z.shape[:-1])

    def extra_repr(self) -> str:
        return f"features={self.event_shape[0]}, context={self.context}, activation={self.activation.name}"


__all__ = ["Planar", "planar_u_hat"]
