"""A conditional bijection applied to the data minus a deterministic estimate from the context."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowforge.core.bijection import Bijection, Shape, batch_shape_of, sum_event


class SourceShift(Bijection):
    """``f(x; c) = g(x - s(c); e(c))``: the bijection ``g`` models the residual of ``x`` from a
    deterministic estimate ``s(c)`` of it, a function of the context only.

    ``net`` maps the context ``(*, K)`` to the pair ``(s(c), e(c))``: the estimate, shaped like
    ``x`` (a vocoder's Griffin-Lim waveform from the mel frames,
    :class:`~flowforge.nn.MelGriffinLim`), and the context ``(*, K')`` that ``g`` sees (the mel
    frames upsampled, with the estimate itself). The shift has unit Jacobian, so the
    log-determinant is ``g``'s and ``p(x | c)`` stays an exact density; sampled at
    temperature ``T -> 0`` the flow returns ``s(c)`` plus ``g``'s learned correction
    ``g^{-1}(0; e(c))``.

    ``net`` may return a third tensor, a positive scale ``a(c)`` shaped like ``x`` (a
    vocoder's loudness envelope): then ``f(x; c) = g((x - s(c)) / a(c); e(c))``, whose
    log-determinant adds ``-sum log a(c)``, so ``g`` sees the residual relative to the
    expected loudness and its errors, ``g^{-1}(0; e)`` included, scale with it.

    Args:
        bijection: the conditional bijection ``g``, which takes contexts ``(*, K')``.
        net: the context's estimate and embedding, ``(*, K) -> ((*, *event), (*, K'))``,
            optionally with a scale: ``(*, K) -> ((*, *event), (*, K'), (*, *event))``.
        context: the size ``K`` of the context this bijection takes.

    References:
        Popov et al. (2021). Grad-TTS: a diffusion probabilistic model for text-to-speech
        (a prior centred on a condition-derived estimate). arXiv:2105.06337.

    Example:
        >>> import torch, flowforge as ff
        >>> class Net(torch.nn.Module):
        ...     def forward(self, c):
        ...         return c.reshape(-1, 1, 4), c  # the estimate x ~ c, and c itself
        >>> layer = ff.transforms.SourceShift(ff.transforms.Squeeze1d((1, 4), 2), Net(), context=4)
        >>> c = torch.randn(3, 4)
        >>> z, ladj = layer(c.reshape(3, 1, 4), c)  # x equal to the estimate: residual 0
        >>> float(z.abs().max()), ladj.shape
        (0.0, torch.Size([3]))
        >>> torch.equal(layer.inverse_value(z, c), c.reshape(3, 1, 4))
        True
    """

    def __init__(self, bijection: Bijection, net: nn.Module, *, context: int) -> None:
        super().__init__(bijection.event_shape)
        self.bijection = bijection
        self.net = net
        self.context = int(context)

    def _source(self, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        if context is None or context.shape[-1] != self.context:
            found = None if context is None else tuple(context.shape)
            raise ValueError(f"expected a context of shape (*, {self.context}), got {found}")
        out = self.net(context)
        return out[0], out[1], (out[2] if len(out) > 2 else None)

    def _log_scale(self, a: Tensor, dtype: torch.dtype) -> Tensor:
        return sum_event(torch.log(a.to(dtype)), len(self.event_shape))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch_shape_of(x, self.event_shape)
        s, e, a = self._source(context)
        if a is None:
            return self.bijection(x - s.to(x.dtype), e)
        z, ladj = self.bijection((x - s.to(x.dtype)) / a.to(x.dtype), e)
        return z, ladj - self._log_scale(a, ladj.dtype)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch_shape_of(z, self.bijection.forward_shape(self.event_shape))
        s, e, a = self._source(context)
        y, ladj = self.bijection.inverse(z, e)
        if a is None:
            return y + s.to(y.dtype), ladj
        return y * a.to(y.dtype) + s.to(y.dtype), ladj + self._log_scale(a, ladj.dtype)

    def forward_value(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        batch_shape_of(x, self.event_shape)
        s, e, a = self._source(context)
        r = x - s.to(x.dtype)
        return self.bijection.forward_value(r if a is None else r / a.to(x.dtype), e)

    def inverse_value(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        batch_shape_of(z, self.bijection.forward_shape(self.event_shape))
        s, e, a = self._source(context)
        y = self.bijection.inverse_value(z, e)
        return (y if a is None else y * a.to(y.dtype)) + s.to(y.dtype)

    def estimate(self, context: Tensor) -> Tensor:
        """The deterministic estimate ``s(c)`` alone, ``(*, *event)``."""
        return self._source(context)[0]

    def forward_shape(self, shape: Shape) -> Shape:
        return self.bijection.forward_shape(shape)

    def inverse_shape(self, shape: Shape) -> Shape:
        return self.bijection.inverse_shape(shape)


__all__ = ["SourceShift"]
