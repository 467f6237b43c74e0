"""Flows: a bijection and a base distribution, exposed as a density model and a
genuine :class:`torch.distributions.Distribution`."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

from flowforge.core.bijection import Bijection, Shape, batch_shape_of
from flowforge.core.distribution import BaseDistribution


class Flow(nn.Module):
    """A normalizing flow ``x = T^{-1}(z)``, ``z ~ base``, with exact log-density.

    ``log p(x) = log p_Z(T(x)) + log|det J_T(x)|`` where ``T = bijection`` maps data to
    latent. Inputs may have any leading batch shape.

    Args:
        bijection: the data -> latent map.
        base: the latent distribution; its event shape must be the bijection's output shape.
        context: size ``C`` of the conditioning vector (0 for an unconditional flow).

    Attributes:
        context: that size ``C``, named as the presets and ``MADE`` name it.

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.flows.MAF(features=3, transforms=2, hidden=(16, 16))
        >>> flow.log_prob(torch.randn(10, 3)).shape
        torch.Size([10])
        >>> flow.sample(4).shape
        torch.Size([4, 3])
    """

    def __init__(self, bijection: Bijection, base: BaseDistribution, *, context: int = 0) -> None:
        super().__init__()
        latent = bijection.forward_shape(bijection.event_shape)
        if tuple(latent) != tuple(base.event_shape):
            raise ValueError(
                f"the bijection outputs events of shape {tuple(latent)} but the base "
                f"distribution has event shape {tuple(base.event_shape)}"
            )
        self.bijection = bijection
        self.base = base
        self.context = int(context)

    @property
    def event_shape(self) -> Shape:
        """Shape of one data event."""
        return self.bijection.event_shape

    # ------------------------------------------------------------------ checks
    def _check_context(self, context: Tensor | None) -> None:
        c = self.context
        if c == 0 and context is not None:
            raise ValueError(
                f"this flow is unconditional (context=0) but got a context of shape "
                f"{tuple(context.shape)}"
            )
        if c > 0:
            if context is None:
                raise ValueError(f"expected a context of shape (*, {c}), got None")
            if context.dim() == 0 or context.shape[-1] != c:
                raise ValueError(
                    f"expected a context of shape (*, {c}), got {tuple(context.shape)}"
                )

    def _check_x(self, x: Tensor) -> Shape:
        try:
            return batch_shape_of(x, self.event_shape)
        except ValueError:
            expected = ", ".join(["*", *(str(s) for s in self.event_shape)])
            raise ValueError(f"expected x of shape ({expected}), got {tuple(x.shape)}") from None

    def _reference(self) -> Tensor | None:
        """The first floating-point parameter: its dtype and device are the flow's. A flow
        without parameters (fixed maps, constant buffers) takes any floating dtype."""
        return next((p for p in self.parameters() if p.is_floating_point()), None)

    def _as_input(self, value: Any, name: str) -> Tensor:
        """``value`` as a tensor of this flow's dtype and device.

        Arrays and lists (numpy's float64 included) are converted, as users of a density
        model expect; a tensor of another dtype is refused with the fix named, never
        silently rounded (a float64 tensor into a float32 flow would lose precision).
        """
        ref = self._reference()
        if not isinstance(value, Tensor):
            try:
                value = torch.as_tensor(value, dtype=None if ref is None else ref.dtype)
            except (TypeError, ValueError, RuntimeError) as e:
                raise ValueError(
                    f"expected {name} as a tensor or an array of numbers, got "
                    f"{type(value).__name__} ({e})"
                ) from None
            return value if ref is None else value.to(ref.device)
        if ref is not None and value.dtype != ref.dtype:
            fix = (
                f"convert it with {name}.to({ref.dtype}) or the flow with flow.to({value.dtype})"
                if value.is_floating_point()
                else f"convert it with {name}.to({ref.dtype})"
            )
            raise ValueError(
                f"expected {name} of dtype {ref.dtype} (the flow's parameters), got "
                f"{value.dtype}: {fix}"
            )
        return value

    @staticmethod
    def _check_n(n: int | Sequence[int]) -> Shape:
        try:
            shape = (operator.index(n),) if not isinstance(n, Sequence) else tuple(n)
            shape = tuple(operator.index(s) for s in shape)
        except TypeError:
            shape = (-1,)
        if any(s < 0 for s in shape):
            raise ValueError(
                f"expected a number of samples (or a sample shape) of non-negative integers, "
                f"got {n!r}"
            )
        return shape

    # ----------------------------------------------------------------- density
    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Exact log-density of ``x``.

        Args:
            x: data of shape ``(*, *event_shape)``.
            context: conditioning of shape ``(*, C)`` for a conditional flow; its batch
                shape broadcasts with that of ``x``.

        Returns:
            The log-density, shape ``(*)``. A row with an infinite value has density zero
            and gets ``-inf`` from every flow (a NaN in the row gives NaN).

        Raises:
            ValueError: ``x`` or ``context`` of the wrong shape, or a tensor of another dtype
                than the flow's (numpy arrays and lists are converted).
        """
        x = self._as_input(x, "x")
        batch = self._check_x(x)
        if context is not None:
            context = self._as_input(context, "context")
        self._check_context(context)
        if context is not None:
            batch = torch.broadcast_shapes(batch, context.shape[:-1])
            x = x.expand(*batch, *self.event_shape)
            context = context.expand(*batch, context.shape[-1]).reshape(-1, context.shape[-1])
        flat = x.reshape(-1, *self.event_shape)  # (N, *event)
        # rows at infinity: computed at 0 (so no inf - inf reaches a gradient), then -inf
        infinite = torch.isinf(flat).flatten(1).any(1)
        flat = flat.masked_fill(infinite.view(-1, *(1,) * len(self.event_shape)), 0.0)
        z, ladj = self.bijection(flat, context)
        lp = (self.base.log_prob(z, context) + ladj).masked_fill(infinite, -math.inf)
        return lp.reshape(batch)

    # ---------------------------------------------------------------- sampling
    def _sample_setup(
        self, n: int | Sequence[int], context: Tensor | None
    ) -> tuple[Shape, int, Tensor | None]:
        sample_shape = self._check_n(n)
        if context is not None:
            context = self._as_input(context, "context")
        self._check_context(context)
        if context is not None:
            sample_shape = (*sample_shape, *context.shape[:-1])
        total = math.prod(sample_shape)
        flat_ctx = None
        if context is not None:
            flat_ctx = context.expand(*sample_shape, context.shape[-1]).reshape(
                total, context.shape[-1]
            )
        return sample_shape, total, flat_ctx

    def _latent(self, total: int, ctx: Tensor | None, temperature: float) -> Tensor:
        """``total`` base samples, scaled by ``temperature`` (standard normal base only)."""
        z = self.base.rsample((total,), ctx)
        if temperature == 1.0:
            return z
        if not getattr(self.base, "tempered_by_scaling", False) or temperature <= 0:
            raise ValueError(
                "sampling at a temperature T != 1 draws z ~ N(0, T^2 I): it needs T > 0 and a "
                f"StandardNormal base; got T = {temperature} and a {type(self.base).__name__}"
            )
        return z * temperature

    def rsample(
        self, n: int | Sequence[int] = 1, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        """Reparameterised samples, shape ``(n, *context_batch, *event_shape)``.

        Args:
            n: number (or shape) of samples.
            context: ``(*context_batch, C)`` for a conditional flow.
            temperature: Glow's reduced-temperature sampling: ``z ~ N(0, T^2 I)`` (needs a
                standard normal base); ``T < 1`` trades diversity for typical samples.

        Samples go through the bijection's value-only inverse
        (:meth:`~flowforge.Bijection.inverse_value`): no log-determinant is computed.
        """
        shape, total, ctx = self._sample_setup(n, context)
        if total == 0:  # an empty sample keeps its shape: (0, *context_batch, *event)
            return self._empty(shape)
        z = self._latent(total, ctx, temperature)
        x = self.bijection.inverse_value(z, ctx)  # no ladj: a CNF skips its trace
        return x.reshape(*shape, *self.event_shape)

    def _empty(self, shape: Shape) -> Tensor:
        ref = self._reference()
        if ref is None:
            return torch.empty((*shape, *self.event_shape))
        return ref.new_empty((*shape, *self.event_shape))

    @torch.no_grad()
    def sample(
        self, n: int | Sequence[int] = 1, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        """Samples without gradient, shape ``(n, *context_batch, *event_shape)``.

        With a context of shape ``(B, C)`` the result has shape ``(n, B, *event_shape)``;
        ``temperature`` as in :meth:`rsample`.
        """
        return self.rsample(n, context, temperature)

    def sample_and_log_prob(
        self, n: int | Sequence[int] = 1, context: Tensor | None = None, temperature: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        """Reparameterised samples and their log-density, in one sampling-direction pass.

        With ``temperature`` (see :meth:`rsample`) the log-density is still the flow's own
        density at the returned samples.

        Returns:
            ``(x, log_prob)`` with shapes ``(n, *context_batch, *event_shape)`` and
            ``(n, *context_batch)``.
        """
        shape, total, ctx = self._sample_setup(n, context)
        if total == 0:
            x = self._empty(shape)
            return x, x.new_empty(shape)
        z = self._latent(total, ctx, temperature)
        log_pz = self.base.log_prob(z, ctx)
        x, ladj = self.bijection.inverse(z, ctx)
        return x.reshape(*shape, *self.event_shape), (log_pz - ladj).reshape(shape)

    def denoise(self, x: Tensor, sigma: float, context: Tensor | None = None) -> Tensor:
        """One step along the flow's own score: ``x + sigma^2 grad_x log p(x)``.

        For a flow trained on data with Gaussian noise of standard deviation ``sigma`` added,
        its density is that of the noisy data, and this is Tweedie's estimate of the clean
        data ``E[x_clean | x]`` (TarFlow denoises its samples with it).

        Args:
            x: ``(*, *event_shape)``, samples of this flow say.
            sigma: the training noise's standard deviation (``>= 0``; 0 returns ``x``).
            context: as in :meth:`log_prob`.

        Returns:
            The denoised ``x``, same shape, without gradient.

        References:
            Efron (2011). Tweedie's Formula and Selection Bias. JASA 106(496).
            Zhai et al. (2024). Normalizing Flows are Capable Generative Models.
            arXiv:2412.06329.

        Example:
            >>> import torch, flowforge as ff
            >>> flow = ff.flows.MAF(features=2, transforms=1, hidden=(8,))  # N(0, I) at init
            >>> flow.denoise(torch.ones(1, 2), 0.5)  # 1 + 0.25 * (-1)
            tensor([[0.7500, 0.7500]])
        """
        if not (sigma >= 0 and math.isfinite(sigma)):
            raise ValueError(f"expected a noise standard deviation sigma >= 0, got {sigma}")
        x = self._as_input(x, "x")
        if sigma == 0:
            return x
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            lp = Flow.log_prob(self, leaf, context)  # the flow's density, never its training
            (score,) = torch.autograd.grad(lp.sum(), leaf)
        return (leaf + sigma * sigma * score).detach()

    # ---------------------------------------------------------- distributions
    def distribution(self, context: Tensor | None = None) -> FlowDistribution:
        """This flow as a :class:`torch.distributions.Distribution` (given ``context``)."""
        self._check_context(context)
        return FlowDistribution(self, context)

    def forward(self, context: Tensor | None = None) -> FlowDistribution:
        """``flow(context)`` is ``flow.distribution(context)``."""
        return self.distribution(context)


class FlowDistribution(Distribution):
    """A flow (with a fixed context) seen as a torch distribution.

    Its ``batch_shape`` is the context's batch shape and its ``event_shape`` the flow's,
    so code that only knows :mod:`torch.distributions` (pyro, ELBOs, ...) can use it.

    Args:
        flow: the flow.
        context: optional context of shape ``(*batch, C)``.
    """

    has_rsample = True
    arg_constraints: dict[str, constraints.Constraint] = {}  # noqa: RUF012

    def __init__(self, flow: Flow, context: Tensor | None = None) -> None:
        self.flow = flow
        self.context = context
        batch = torch.Size(context.shape[:-1]) if context is not None else torch.Size()
        super().__init__(batch, torch.Size(flow.event_shape), validate_args=False)

    @property
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.real, len(self.event_shape))

    def rsample(self, sample_shape: Sequence[int] = torch.Size()) -> Tensor:
        shape = tuple(sample_shape)
        x = self.flow.rsample(math.prod(shape), self.context)
        return x.reshape(*shape, *self.batch_shape, *self.event_shape)

    def sample(self, sample_shape: Sequence[int] = torch.Size()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        return self.flow.log_prob(value, self.context)

    def rsample_and_log_prob(
        self, sample_shape: Sequence[int] = torch.Size()
    ) -> tuple[Tensor, Tensor]:
        """Reparameterised samples and their log-density in one pass."""
        shape = tuple(sample_shape)
        x, lp = self.flow.sample_and_log_prob(math.prod(shape), self.context)
        return (
            x.reshape(*shape, *self.batch_shape, *self.event_shape),
            lp.reshape(*shape, *self.batch_shape),
        )


__all__ = ["Flow", "FlowDistribution"]
