"""Coupling layers on images ``(C, H, W)``: by channels, or by a checkerboard of pixels.

:class:`ChannelCoupling` also takes sequences ``(C, T)`` (a squeezed waveform, WaveGlow's
coupling, with a 1-D network such as :class:`flowforge.nn.WaveNet`).

The conditioner is a convolutional network (e.g. :class:`flowforge.nn.ConvNet`); the
transformer is any elementwise one (Additive, Affine, SigmoidAffine, RationalQuadraticSpline),
applied to each value of the transformed part with its ``P`` parameters.

A context vector ``(*, K)`` (a one-hot class label, say) enters the network as ``K`` extra
constant input channels. With ``spatial=True`` the context is instead ``F`` feature maps of the
image's size, flattened (``K = F H W``, read as ``(F, H, W)``; ``K = F T`` read as ``(F, T)``
for sequences), which enter as ``F`` input channels: the conditioner then sees a conditioning
image pixel by pixel (variational dequantization's noise flow sees the image it dequantizes
this way), or a conditioning sequence (mel frames upsampled to the sample rate) step by step.

References:
    Dinh, Sohl-Dickstein, Bengio (2017). Density estimation using Real NVP. arXiv:1605.08803.
    Kingma, Dhariwal (2018). Glow. arXiv:1807.03039.
    Prenger, Valle, Catanzaro (2019). WaveGlow. arXiv:1811.00002.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowforge.core.bijection import Bijection, batch_shape_of, sum_event
from flowforge.transforms.transformer import Transformer


def _image_event(shape: Sequence[int], name: str, sequence: bool = False) -> tuple[int, ...]:
    dims = tuple(int(s) for s in shape)
    ranks = (2, 3) if sequence else (3,)
    if len(dims) not in ranks or min(dims) < 1:
        what = "(C, T) or (C, H, W)" if sequence else "(C, H, W)"
        raise ValueError(f"{name}: expected an event shape {what}, got {dims}")
    return dims


class _ImageCoupling(Bijection):
    """Shared plumbing: flattening the batch, context channels, the parameter layout."""

    def __init__(
        self,
        shape: Sequence[int],
        transformer: Transformer,
        net: nn.Module,
        *,
        context: int,
        spatial: bool = False,
    ) -> None:
        super().__init__(shape)
        self.transformer = transformer
        self.net = net
        self.context = int(context)
        self.spatial = bool(spatial)
        pixels = math.prod(self.event_shape[1:])
        if self.spatial and (self.context < 1 or self.context % pixels):
            size = "x".join(str(s) for s in self.event_shape[1:])
            raise ValueError(
                f"{type(self).__name__}: a spatial context holds feature maps of "
                f"{size} positions, so its size must be a positive multiple of {pixels}; got "
                f"context={self.context}"
            )
        #: channels the context adds to the network's input
        self.context_channels = self.context // pixels if self.spatial else self.context

    def _net_input(self, h: Tensor, context: Tensor | None) -> Tensor:
        """``h`` ``(N, c, *S)`` with the context as extra channels, ``(N, c + K, *S)``
        (constant channels, or the ``F`` feature maps of a spatial context)."""
        if not self.context:
            return h
        if context is None:
            raise ValueError(f"expected a context of shape (*, {self.context}), got None")
        n, space = h.shape[0], tuple(h.shape[2:])
        if self.spatial:
            ctx = context.reshape(n, self.context_channels, *space)
        else:
            ones = (1,) * len(space)
            ctx = context.reshape(n, self.context, *ones).expand(n, self.context, *space)
        return torch.cat([h, ctx.to(h.dtype)], dim=1)

    def _params(self, h: Tensor, context: Tensor | None, channels: int) -> Tensor:
        """Network outputs ``(N, P * c, *S)`` as parameters ``(N, c, *S, P)``.

        The output channels are read parameter-major (``P`` blocks of ``c`` channels), so
        each parameter is one contiguous slab per image, the layout the transformers prefer.
        """
        out = self.net(self._net_input(h, context))
        p = self.transformer.params_per_dim
        expected = (h.shape[0], p * channels, *h.shape[2:])
        if tuple(out.shape) != expected:
            raise ValueError(
                f"{type(self).__name__}: the network must output shape {expected} "
                f"({p} parameters x {channels} channels), got {tuple(out.shape)}"
            )
        return out.unflatten(1, (p, channels)).movedim(1, -1)

    def _couple(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(x, context, inverse=False)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(z, context, inverse=True)

    def _flat(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor | None, tuple]:
        batch = batch_shape_of(x, self.event_shape)
        flat = x.reshape(-1, *self.event_shape)
        if context is not None:
            context = context.expand(*batch, context.shape[-1]).reshape(-1, context.shape[-1])
        return flat, context, batch


class ChannelCoupling(_ImageCoupling):
    """``z_B = tau(x_B; net(x_A, c))``, ``z_A = x_A`` with ``A``, ``B`` halves of the channels.

    ``A`` is the first ``ceil(C / 2)`` channels (the last ones with ``flip``). The network
    maps ``(N, |A| + K, H, W)`` to ``(N, P |B|, H, W)`` (``P`` parameters per value, read as
    ``P`` blocks of ``|B|`` channels). Also Glow's learned split prior: the factored half
    given the kept half is this layer with ``A`` the kept half. On sequences ``(C, T)`` the
    same with ``(N, |A| + K, T)`` in and ``(N, P |B|, T)`` out (WaveGlow's affine coupling).

    Args:
        shape: the event shape ``(C, H, W)`` or ``(C, T)``, ``C >= 2``.
        transformer: the elementwise transformer of the ``B`` channels.
        net: the conditioner network, e.g. :class:`flowforge.nn.ConvNet`.
        context: size ``K`` of the context vector (extra constant input channels).
        flip: condition on the last channels instead of the first.
        spatial: the context is feature maps ``(F, H, W)`` (``(F, T)``) flattened (``K = F H
            W``, ``F T``), entering as ``F`` input channels.

    Example:
        >>> import torch, flowforge as ff
        >>> t = ff.transforms.Affine()
        >>> layer = ChannelCoupling((4, 8, 8), t, ff.nn.ConvNet(2, 2 * 2, hidden=(16, 16)))
        >>> z, ladj = layer(torch.randn(3, 4, 8, 8))
        >>> z.shape, ladj.shape
        (torch.Size([3, 4, 8, 8]), torch.Size([3]))
    """

    def __init__(
        self,
        shape: Sequence[int],
        transformer: Transformer,
        net: nn.Module,
        *,
        context: int = 0,
        flip: bool = False,
        spatial: bool = False,
    ) -> None:
        c = _image_event(shape, "ChannelCoupling", sequence=True)[0]
        if c < 2:
            raise ValueError(f"ChannelCoupling: expected at least 2 channels, got {c}")
        super().__init__(shape, transformer, net, context=context, spatial=spatial)
        self.flip = bool(flip)
        keep = (c + 1) // 2
        self.sizes = (c - keep, keep) if self.flip else (keep, c - keep)  # channel split

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        first, second = x.split(self.sizes, dim=1)
        return (second, first) if self.flip else (first, second)  # (A, B)

    def _join(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.cat([b, a] if self.flip else [a, b], dim=1)

    def _couple(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        flat, ctx, batch = self._flat(x, context)
        a, b = self._split(flat)
        params = self._params(a, ctx, b.shape[1])  # (N, |B|, *S, P)
        fn = self.transformer.inverse if inverse else self.transformer
        yb, ladj = fn(b, params)
        y = self._join(a, yb).reshape(*batch, *self.event_shape)
        return y, sum_event(ladj, len(self.event_shape)).reshape(batch)


def checkerboard(height: int, width: int, parity: int = 0) -> Tensor:
    """Boolean ``(H, W)`` checkerboard, ``True`` where ``(h + w + parity)`` is even."""
    rows = torch.arange(height)[:, None]
    cols = torch.arange(width)[None, :]
    return (rows + cols + parity) % 2 == 0


class CheckerboardCoupling(_ImageCoupling):
    """RealNVP's spatial coupling: pixels on one colour of a checkerboard condition the rest.

    The network sees the image with the transformed pixels zeroed, ``x * m`` ``(N, C + K,
    H, W)``, and outputs parameters for every value, ``(N, P C, H, W)``; those of the
    conditioning pixels are unused (their values pass unchanged and add nothing to the
    log-determinant).

    Args:
        shape: the image event shape ``(C, H, W)``.
        transformer: the elementwise transformer.
        net: the conditioner network, ``C + K`` channels in and ``P C`` out (``C + F`` in
            with a spatial context).
        context: size ``K`` of the context vector.
        parity: which colour conditions (``0``: pixels where ``h + w`` is even).
        spatial: the context is feature maps ``(F, H, W)`` flattened (``K = F H W``), entering
            as ``F`` input channels.

    Example:
        >>> import torch, flowforge as ff
        >>> t = ff.transforms.Affine()
        >>> layer = CheckerboardCoupling((1, 4, 4), t, ff.nn.ConvNet(1, 2, hidden=(8, 8)))
        >>> layer(torch.randn(2, 1, 4, 4))[0].shape
        torch.Size([2, 1, 4, 4])
    """

    mask: Tensor

    def __init__(
        self,
        shape: Sequence[int],
        transformer: Transformer,
        net: nn.Module,
        *,
        context: int = 0,
        parity: int = 0,
        spatial: bool = False,
    ) -> None:
        _, h, w = _image_event(shape, "CheckerboardCoupling")
        if h * w < 2:
            raise ValueError("CheckerboardCoupling: needs at least two pixels")
        super().__init__(shape, transformer, net, context=context, spatial=spatial)
        self.parity = int(parity) % 2
        self.register_buffer("mask", checkerboard(h, w, self.parity), persistent=False)

    def _couple(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        flat, ctx, batch = self._flat(x, context)
        keep = self.mask  # (H, W): True where the value conditions
        params = self._params(flat * keep.to(flat.dtype), ctx, flat.shape[1])
        fn = self.transformer.inverse if inverse else self.transformer
        y, ladj = fn(flat, params)  # every value; the kept ones are discarded below
        y = torch.where(keep, flat, y)
        ladj = torch.where(keep, ladj.new_zeros(()), ladj)
        return y.reshape(*batch, *self.event_shape), sum_event(ladj, 3).reshape(batch)


__all__ = ["ChannelCoupling", "CheckerboardCoupling", "checkerboard"]
