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


class Squeeze(Bijection):
    """Space to depth: each ``factor x factor`` block of pixels becomes ``factor^2`` channels.

    ``(C, H, W) -> (C f^2, H / f, W / f)``. Output channel ``c f^2 + i f + j`` holds the
    input channel ``c`` at offset ``(i, j)`` within each block (row-major within the block),
    so the ``f^2`` positions of one input channel are neighbours. The log-determinant is
    zero; ``Squeeze(...).inv`` is depth to space.

    Args:
        shape: the image event shape ``(C, H, W)``; ``H`` and ``W`` divisible by ``factor``.
        factor: the block size ``f``.

    References:
        Dinh, Sohl-Dickstein, Bengio (2017). Density estimation using Real NVP.
        arXiv:1605.08803.

    Example:
        >>> import torch, flowforge as ff
        >>> squeeze = ff.transforms.Squeeze((1, 2, 2))
        >>> z, _ = squeeze(torch.arange(4.0).reshape(1, 1, 2, 2))
        >>> z.flatten().tolist(), squeeze.forward_shape((1, 2, 2))
        ([0.0, 1.0, 2.0, 3.0], (4, 1, 1))
    """

    def __init__(self, shape: Sequence[int], factor: int = 2) -> None:
        super().__init__(shape)
        if len(self.event_shape) != 3:
            raise ValueError(f"Squeeze: expected an image event shape (C, H, W), got {shape}")
        c, h, w = self.event_shape
        if factor < 1 or h % factor or w % factor:
            raise ValueError(
                f"Squeeze: height and width must be divisible by factor {factor}, got {h}x{w}"
            )
        self.factor = int(factor)
        self.latent_shape = (c * factor * factor, h // factor, w // factor)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = batch_shape_of(x, self.event_shape)
        c, h, w = self.event_shape
        f, n = self.factor, len(batch)
        y = x.reshape(*batch, c, h // f, f, w // f, f)  # (*, C, H/f, i, W/f, j)
        order = [*range(n), n, n + 2, n + 4, n + 1, n + 3]  # (*, C, i, j, H/f, W/f)
        return y.permute(order).reshape(*batch, *self.latent_shape), x.new_zeros(batch)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = batch_shape_of(z, self.latent_shape)
        c, h, w = self.event_shape
        f, n = self.factor, len(batch)
        y = z.reshape(*batch, c, f, f, h // f, w // f)  # (*, C, i, j, H/f, W/f)
        order = [*range(n), n, n + 3, n + 1, n + 4, n + 2]  # (*, C, H/f, i, W/f, j)
        return y.permute(order).reshape(*batch, *self.event_shape), z.new_zeros(batch)

    def forward_shape(self, shape: Shape) -> Shape:
        if tuple(shape) != self.event_shape:
            raise ValueError(f"Squeeze takes events of shape {self.event_shape}, got {shape}")
        return self.latent_shape

    def inverse_shape(self, shape: Shape) -> Shape:
        if tuple(shape) != self.latent_shape:
            raise ValueError(
                f"Squeeze.inverse takes events of shape {self.latent_shape}, got {shape}"
            )
        return self.event_shape

    def extra_repr(self) -> str:
        return f"{self.event_shape} -> {self.latent_shape}"


class Squeeze1d(Bijection):
    """Group every ``factor`` consecutive samples of a sequence into channels.

    ``(C, T) -> (C g, T / g)``: output channel ``c g + i`` at step ``t`` holds input channel
    ``c`` at time ``t g + i``, so a mono waveform ``(1, T)`` becomes ``g`` interleaved
    sub-sequences of ``T / g`` steps (WaveGlow's groups of samples). The log-determinant is
    zero; ``Squeeze1d(...).inv`` puts the samples back in order.

    Args:
        shape: the sequence event shape ``(C, T)``; ``T`` divisible by ``factor``.
        factor: the group size ``g``.

    References:
        Prenger, Valle, Catanzaro (2019). WaveGlow: A Flow-based Generative Network for
        Speech Synthesis. arXiv:1811.00002.

    Example:
        >>> import torch, flowforge as ff
        >>> squeeze = ff.transforms.Squeeze1d((1, 6), factor=3)
        >>> z, _ = squeeze(torch.arange(6.0).reshape(1, 1, 6))
        >>> z[0].tolist(), squeeze.forward_shape((1, 6))
        ([[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]], (3, 2))
    """

    def __init__(self, shape: Sequence[int], factor: int = 2) -> None:
        super().__init__(shape)
        if len(self.event_shape) != 2:
            raise ValueError(f"Squeeze1d: expected a sequence event shape (C, T), got {shape}")
        c, t = self.event_shape
        if factor < 1 or t % factor:
            raise ValueError(f"Squeeze1d: length {t} must be divisible by factor {factor}")
        self.factor = int(factor)
        self.latent_shape = (c * factor, t // factor)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = batch_shape_of(x, self.event_shape)
        c, t = self.event_shape
        y = x.reshape(*batch, c, t // self.factor, self.factor)  # (*, C, T/g, i)
        y = y.transpose(-1, -2)  # (*, C, i, T/g)
        return y.reshape(*batch, *self.latent_shape), x.new_zeros(batch)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = batch_shape_of(z, self.latent_shape)
        c, t = self.event_shape
        y = z.reshape(*batch, c, self.factor, t // self.factor)  # (*, C, i, T/g)
        y = y.transpose(-1, -2)  # (*, C, T/g, i)
        return y.reshape(*batch, *self.event_shape), z.new_zeros(batch)

    def forward_shape(self, shape: Shape) -> Shape:
        if tuple(shape) != self.event_shape:
            raise ValueError(f"Squeeze1d takes events of shape {self.event_shape}, got {shape}")
        return self.latent_shape

    def inverse_shape(self, shape: Shape) -> Shape:
        if tuple(shape) != self.latent_shape:
            raise ValueError(
                f"Squeeze1d.inverse takes events of shape {self.latent_shape}, got {shape}"
            )
        return self.event_shape

    def extra_repr(self) -> str:
        return f"{self.event_shape} -> {self.latent_shape}"


__all__ = ["Reshape", "Squeeze", "Squeeze1d"]
