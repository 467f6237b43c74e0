"""A conditional bijection applied to the data minus a deterministic estimate from the context."""

from __future__ import annotations

from torch import Tensor, nn

from flowforge.core.bijection import Bijection, Shape, batch_shape_of


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

    Args:
        bijection: the conditional bijection ``g``, which takes contexts ``(*, K')``.
        net: the context's estimate and embedding, ``(*, K) -> ((*, *event), (*, K'))``.
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

    def _source(self, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if context is None or context.shape[-1] != self.context:
            found = None if context is None else tuple(context.shape)
            raise ValueError(f"expected a context of shape (*, {self.context}), got {found}")
        s, e = self.net(context)
        return s, e

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch_shape_of(x, self.event_shape)
        s, e = self._source(context)
        return self.bijection(x - s.to(x.dtype), e)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch_shape_of(z, self.bijection.forward_shape(self.event_shape))
        s, e = self._source(context)
        y, ladj = self.bijection.inverse(z, e)
        return y + s.to(y.dtype), ladj

    def forward_value(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        batch_shape_of(x, self.event_shape)
        s, e = self._source(context)
        return self.bijection.forward_value(x - s.to(x.dtype), e)

    def inverse_value(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        batch_shape_of(z, self.bijection.forward_shape(self.event_shape))
        s, e = self._source(context)
        y = self.bijection.inverse_value(z, e)
        return y + s.to(y.dtype)

    def estimate(self, context: Tensor) -> Tensor:
        """The deterministic estimate ``s(c)`` alone, ``(*, *event)``."""
        return self._source(context)[0]

    def forward_shape(self, shape: Shape) -> Shape:
        return self.bijection.forward_shape(shape)

    def inverse_shape(self, shape: Shape) -> Shape:
        return self.bijection.inverse_shape(shape)


__all__ = ["SourceShift"]
