"""A conditional bijection whose context is first passed through a network (an embedding)."""

from __future__ import annotations

from torch import Tensor, nn

from flowforge.core.bijection import Bijection, Shape


class EmbedContext(Bijection):
    """``f(x; c) = g(x; net(c))``: the bijection ``g`` sees an embedding of the context.

    The context ``(*, K)`` goes through ``net`` (``(*, K) -> (*, K')``, learned or fixed)
    before every member of ``g`` sees it; ``x`` and the log-determinant are ``g``'s. A vocoder
    takes mel frames ``(*, F frames)`` and its couplings see them upsampled to the sample rate
    (:class:`~flowforge.nn.FrameUpsample`), computed once per call instead of once per layer.

    Args:
        bijection: the conditional bijection ``g``, which takes contexts ``(*, K')``.
        net: the embedding, ``(*, K) -> (*, K')``.
        context: the size ``K`` of the context this bijection takes.

    Example:
        >>> import torch, flowforge as ff
        >>> inner = ff.transforms.ChannelCoupling(
        ...     (2, 8), ff.transforms.Affine(), ff.nn.WaveNet(1, 2, 8, 2, cond_channels=1),
        ...     context=8, spatial=True)
        >>> up = ff.nn.FrameUpsample(features=1, frames=2, length=16, factor=2)  # (*, 1 * 8)
        >>> layer = ff.transforms.EmbedContext(inner, up, context=2)
        >>> z, ladj = layer(torch.randn(3, 2, 8), torch.randn(3, 2))
        >>> z.shape, ladj.shape
        (torch.Size([3, 2, 8]), torch.Size([3]))
    """

    def __init__(self, bijection: Bijection, net: nn.Module, *, context: int) -> None:
        super().__init__(bijection.event_shape)
        self.bijection = bijection
        self.net = net
        self.context = int(context)

    def _embed(self, context: Tensor | None) -> Tensor:
        if context is None or context.shape[-1] != self.context:
            found = None if context is None else tuple(context.shape)
            raise ValueError(f"expected a context of shape (*, {self.context}), got {found}")
        return self.net(context)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.bijection(x, self._embed(context))

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.bijection.inverse(z, self._embed(context))

    def forward_value(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.bijection.forward_value(x, self._embed(context))

    def inverse_value(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        return self.bijection.inverse_value(z, self._embed(context))

    def forward_shape(self, shape: Shape) -> Shape:
        return self.bijection.forward_shape(shape)

    def inverse_shape(self, shape: Shape) -> Shape:
        return self.bijection.inverse_shape(shape)


__all__ = ["EmbedContext"]
