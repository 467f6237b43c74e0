"""Noise flows of variational dequantization: conditional flows ``r(y | c(v))`` of the logit
``y`` of the noise, given a context ``c(v)`` computed from the levels ``v``.

Two builders, each returning ``(flow, encoder, context size)`` for
:class:`~flowforge.dequantization.VariationalDequantizer`:

- :func:`conv_noise_flow` (``noise="conv"``, images): a small conv net turns the scaled image
  into ``F`` feature maps; checkerboard affine couplings over ``(C, H, W)`` whose conv
  conditioners see those maps pixel by pixel (a spatial context); a standard logistic base.
  Every coupling's last layer starts at zero, so at initialisation ``y`` is standard logistic
  and the noise ``e = sigmoid(y)`` is exactly uniform: training starts from uniform
  dequantization. Its size does not grow with the number of pixels.
- :func:`realnvp_noise_flow` (``noise="realnvp"``, any shape): a conditional
  :class:`~flowforge.flows.RealNVP` over the ``D`` flattened values with a
  :class:`~flowforge.distributions.ConditionalDiagNormal` base, given the flattened levels
  (or an encoder's vector, e.g. :func:`conv_encoder`). Its coupling networks see
  ``D / 2 + |c|`` inputs, so a layer costs ``O((D / 2 + |c|) H + H^2 + D H)`` weights for hidden
  width ``H``: about ``2.5 D H`` with the flattened levels (``|c| = D``), fine for 8x8 digits,
  ~4M weights per layer on CIFAR-10 at ``H = 512``.

References:
    Ho, Chen, Srinivas, Duan, Abbeel (2019). Flow++: Improving Flow-Based Generative Models
    with Variational Dequantization and Architecture Design. arXiv:1902.00275.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from flowforge.core.bijection import Compose
from flowforge.core.flow import Flow
from flowforge.data.base import DataError
from flowforge.distributions.base import ConditionalDiagNormal
from flowforge.distributions.logistic import StandardLogistic
from flowforge.flows.coupling import RealNVP
from flowforge.nn.conv import ConvNet
from flowforge.transforms.affine import Affine
from flowforge.transforms.image_coupling import CheckerboardCoupling

__all__ = ["NOISE_FLOWS", "conv_encoder", "conv_noise_flow", "realnvp_noise_flow"]

#: The names of the built-in noise flows (``VariationalDequantizer(noise=...)``).
NOISE_FLOWS = ("conv", "realnvp")


def _image(shape: Sequence[int], name: str) -> tuple[int, int, int]:
    dims = tuple(int(s) for s in shape)
    if len(dims) != 3 or min(dims) < 1:
        raise DataError(f"{name}: expected an image shape (C, H, W), got {dims}")
    return dims


def conv_encoder(shape: Sequence[int], *, context: int, hidden: int = 32) -> nn.Module:
    """A small conv net from integer-level images to a context vector for the noise flow.

    ``conv 3x3 (hidden) -> ReLU -> conv 3x3 stride 2 (hidden) -> ReLU -> flatten -> linear``:
    ``(N, C, H, W) -> (N, context)``, for images where the flattened levels (``D`` context
    values) would make a :func:`realnvp_noise_flow`'s conditioner too wide.

    Args:
        shape: the image event shape ``(C, H, W)``.
        context: the output size.
        hidden: channels of both convolutions.

    Example:
        >>> import torch
        >>> conv_encoder((3, 8, 8), context=16)(torch.zeros(2, 3, 8, 8)).shape
        torch.Size([2, 16])
    """
    c, h, w = _image(shape, "conv_encoder")
    cells = hidden * ((h + 1) // 2) * ((w + 1) // 2)
    return nn.Sequential(
        nn.Conv2d(c, hidden, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(hidden, hidden, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(cells, context),
    )


def conv_noise_flow(
    shape: Sequence[int], transforms: int = 2, hidden: int = 16, features: int = 8
) -> tuple[Flow, nn.Module, int]:
    """Checkerboard affine couplings over the image, conditioned on conv features of it.

    The encoder is ``conv 3x3 (F) -> ReLU -> conv 3x3 (F) -> flatten``, ``(N, C, H, W) ->
    (N, F H W)``; coupling ``i`` is a :class:`~flowforge.transforms.CheckerboardCoupling`
    (parity ``i mod 2``) with a bounded :class:`~flowforge.transforms.Affine` transformer and a
    :class:`~flowforge.nn.ConvNet` of two hidden layers of ``hidden`` channels, ``C + F`` channels in (the kept
    pixels and the ``F`` feature maps as a spatial context), last layer zero; the base is a
    standard logistic, so the untrained flow's ``sigmoid(y)`` is uniform.

    Args:
        shape: the image event shape ``(C, H, W)``.
        transforms: the number of couplings (``>= 1``; two transform every pixel once).
        hidden: channels of each hidden layer of each coupling's conv net.
        features: ``F``, the encoder's feature maps.

    Returns:
        ``(flow, encoder, context)``: the flow over ``(C, H, W)`` with context size
        ``F H W``, the encoder, and that size.

    Example:
        >>> import torch
        >>> flow, encoder, size = conv_noise_flow((1, 4, 4), transforms=2, hidden=8, features=4)
        >>> c = encoder(torch.zeros(3, 1, 4, 4))
        >>> size, c.shape, flow.log_prob(torch.zeros(3, 1, 4, 4), c).shape
        (64, torch.Size([3, 64]), torch.Size([3]))
    """
    c, h, w = _image(shape, "conv_noise_flow")
    for name, value in (("transforms", transforms), ("hidden", hidden), ("features", features)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise DataError(f"conv_noise_flow: {name} must be an integer >= 1, got {value!r}")
    if h * w < 2:
        raise DataError(f"conv_noise_flow: needs at least two pixels, got {h}x{w}")
    size = features * h * w
    encoder = nn.Sequential(
        nn.Conv2d(c, features, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(features, features, 3, padding=1),
        nn.Flatten(),
    )
    couplings = [
        CheckerboardCoupling(
            (c, h, w),
            Affine(3.0),
            ConvNet(c + features, 2 * c, (hidden, hidden)),
            context=size,
            parity=i % 2,
            spatial=True,
        )
        for i in range(transforms)
    ]
    return Flow(Compose(couplings), StandardLogistic((c, h, w)), context=size), encoder, size


def realnvp_noise_flow(
    dim: int,
    *,
    context: int,
    transforms: int = 4,
    hidden: Sequence[int] = (128, 128),
) -> Flow:
    """A conditional :class:`~flowforge.flows.RealNVP` over ``D`` values given ``context``.

    Its base is a :class:`~flowforge.distributions.ConditionalDiagNormal` (a mean and scale
    per value given the context, starting at the standard normal).

    Args:
        dim: ``D``, at least 2.
        context: the size of the context vector.
        transforms: coupling layers.
        hidden: hidden sizes of the coupling networks.

    Example:
        >>> realnvp_noise_flow(4, context=4, transforms=1, hidden=(8,)).event_shape
        (4,)
    """
    if dim < 2:
        raise DataError("VariationalDequantizer: the default noise flow needs D >= 2")
    base = ConditionalDiagNormal(dim, context=context)
    return RealNVP(features=dim, context=context, transforms=transforms, hidden=hidden, base=base)
