"""Invertible 1x1 convolutions: one learned ``C x C`` matrix applied to every position's channels.

Events are images ``(C, H, W)`` or sequences ``(C, T)`` (a waveform squeezed into groups of
samples, WaveGlow's use); the matrix mixes the channels at every pixel or time step.

References:
    Kingma, Dhariwal (2018). Glow: Generative Flow with Invertible 1x1 Convolutions.
    arXiv:1807.03039.
    Prenger, Valle, Catanzaro (2019). WaveGlow: A Flow-based Generative Network for Speech
    Synthesis. arXiv:1811.00002.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowforge.core.bijection import Bijection, batch_shape_of
from flowforge.transforms.lu import LULinear


def _channels_shape(shape: int | Sequence[int], name: str) -> tuple[int, ...]:
    dims = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
    if len(dims) not in (2, 3) or min(dims) < 1:
        raise ValueError(
            f"{name}: expected an event shape (C, T) or (C, H, W) with positive sizes, got {dims}"
        )
    return dims


class Conv1x1(Bijection):
    """``z[:, h, w] = W x[:, h, w]`` with a free ``(C, C)`` weight, on ``(C, H, W)`` or ``(C, T)``.

    ``log|det| = H W log|det W|`` (``T log|det W|`` on sequences), computed in float64 (``slogdet``); the inverse applies
    ``W^-1`` solved in float64 too, so a badly conditioned weight loses no precision in
    float32. A weight that has become singular (``det W = 0``, or not finite) raises a
    ``ValueError`` instead of returning ``inf``. Initialised at a random rotation.
    :class:`LUConv1x1` cannot become singular and costs ``O(C)`` for the log-determinant.

    Args:
        shape: the event shape ``(C, H, W)`` or ``(C, T)``.

    Example:
        >>> import torch, flowforge as ff
        >>> conv = ff.transforms.Conv1x1((3, 4, 4))
        >>> z, ladj = conv(torch.randn(2, 3, 4, 4))
        >>> z.shape, bool(ladj.abs().max() < 1e-5)  # a rotation at initialisation
        (torch.Size([2, 3, 4, 4]), True)
    """

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__(_channels_shape(shape, "Conv1x1"))
        c = self.event_shape[0]
        q, _ = torch.linalg.qr(torch.randn(c, c, dtype=torch.float64))
        self.weight = nn.Parameter(q.float())

    def _logdet(self) -> Tensor:
        sign, logabsdet = torch.linalg.slogdet(self.weight.double())
        if bool(sign == 0) or not bool(torch.isfinite(logabsdet)):
            raise ValueError(
                "Conv1x1: the weight has become singular (det W = 0 or not finite); lower the "
                "learning rate, or use LUConv1x1, whose weight stays invertible"
            )
        return logabsdet * math.prod(self.event_shape[1:])  # once per pixel / time step

    def _mix(self, x: Tensor, weight: Tensor) -> Tensor:
        x = x.movedim(-len(self.event_shape), -1)  # (*, *S, C)
        return (x @ weight.T).movedim(-1, -len(self.event_shape))  # (*, C, *S)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = batch_shape_of(x, self.event_shape)
        ladj = self._logdet().to(x.dtype).expand(batch)
        return self._mix(x, self.weight.to(x.dtype)), ladj

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = batch_shape_of(z, self.event_shape)
        ladj = -self._logdet().to(z.dtype).expand(batch)
        inv = torch.linalg.inv(self.weight.double()).to(z.dtype)
        return self._mix(z, inv), ladj


class LUConv1x1(Bijection):
    """A 1x1 convolution whose weight is ``W = P L U`` (Glow's LU parameterisation).

    ``P`` is a fixed permutation, ``L`` unit lower triangular and ``U`` upper triangular with
    the diagonal ``sign * exp(log_diag)``, so ``W`` stays invertible whatever the optimiser
    does and ``log|det| = H W sum(log_diag)``. It is :class:`~flowforge.transforms.LULinear`
    over the channels, applied at every pixel or time step (with its bias, initially zero).

    Layout (images): the output has the input's shape ``(*, C, H, W)`` with its memory ordered
    ``(*, H, W, C)`` (channels-last; ``torch.channels_last`` for a 4-d batch), in both
    directions. That is on purpose: the matrix product runs over the channels of each pixel,
    and the couplings' convolutions after it run faster on channels-last input than on a copy
    to contiguous NCHW (a Glow training step on 8x8 digits: ~8% faster, measured against a
    ``.contiguous()`` output and against ``conv2d``: ``benchmarks/results/glow_step.md``).
    Call ``.contiguous()`` on the result if you need NCHW memory.

    Args:
        shape: the event shape ``(C, H, W)`` or ``(C, T)``.

    Example:
        >>> import torch, flowforge as ff
        >>> conv = ff.transforms.LUConv1x1((3, 4, 4))
        >>> x = torch.randn(2, 3, 4, 4)
        >>> z, ladj = conv(x)
        >>> torch.allclose(conv.inverse(z)[0], x, atol=1e-5)
        True
    """

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__(_channels_shape(shape, "LUConv1x1"))
        self.linear = LULinear(self.event_shape[0])

    def _pixels(self, x: Tensor, fn: str) -> tuple[Tensor, Tensor]:
        batch = batch_shape_of(x, self.event_shape)
        d = len(self.event_shape)
        y, ladj = getattr(self.linear, fn)(x.movedim(-d, -1))  # (*, *S, C), (*, *S)
        # a view: (*, C, *S) over (*, *S, C) memory, channels-last on purpose (see above)
        return y.movedim(-1, -d), ladj.flatten(len(batch)).sum(-1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._pixels(x, "forward")

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._pixels(z, "inverse")


__all__ = ["Conv1x1", "LUConv1x1"]
