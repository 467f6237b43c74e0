"""Reshaping bijections: the same numbers in an event of another shape (volume preserving)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor

from flowforge.core.bijection import Bijection, Shape, as_shape, batch_shape_of


class Reshape(Bijection):
    """View each event of shape ``shape`` as an event of shape ``to`` (row-major order).

    ``forward`` maps ``(*, *shape)`` to ``(*, *to)``, ``inverse`` back; the log-determinant
    is zero. Flattening an image latent for a vector flow is ``Reshape((C, H, W), (C*H*W,))``.

    Args:
        shape: the event shape of the data, e.g. ``(C, H, W)``.
        to: the event shape of the latent, with as many elements.

    Example:
        >>> import torch, flowforge as ff
        >>> flatten = ff.transforms.Reshape((2, 3, 3), (18,))
        >>> z, ladj = flatten(torch.randn(4, 2, 3, 3))
        >>> z.shape, ladj.shape, flatten.inv.event_shape
        (torch.Size([4, 18]), torch.Size([4]), (18,))
    """

    def __init__(self, shape: int | Sequence[int], to: int | Sequence[int]) -> None:
        super().__init__(shape)
        self.latent_shape = as_shape(to)
        if math.prod(self.latent_shape) != math.prod(self.event_shape) or not self.latent_shape:
            raise ValueError(
                f"cannot reshape events of shape {self.event_shape} "
                f"({math.prod(self.event_shape)} elements) to {self.latent_shape}"
            )

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = batch_shape_of(x, self.event_shape)
        return x.reshape(*batch, *self.latent_shape), x.new_zeros(batch)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = batch_shape_of(z, self.latent_shape)
        return z.reshape(*batch, *self.event_shape), z.new_zeros(batch)

    def forward_shape(self, shape: Shape) -> Shape:
        if tuple(shape) != self.event_shape:
            raise ValueError(
                f"Reshape takes events of shape {self.event_shape}, got {tuple(shape)}"
            )
        return self.latent_shape

    def inverse_shape(self, shape: Shape) -> Shape:
        if tuple(shape) != self.latent_shape:
            raise ValueError(
                f"Reshape.inverse takes events of shape {self.latent_shape}, got {tuple(shape)}"
            )
        return self.event_shape

    def extra_repr(self) -> str:
        return f"{self.event_shape} -> {self.latent_shape}"


__all__ = ["Reshape"]
