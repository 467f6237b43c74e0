"""RealNVP for images: checkerboard and channel couplings over several scales."""

from __future__ import annotations

from collections.abc import Sequence

from flowforge.core.bijection import Bijection, Compose
from flowforge.distributions.base import BaseDistribution
from flowforge.flows._common import Preset, preset_hparams
from flowforge.flows.arguments import Image, image_shape, renamed_steps
from flowforge.nn.conv import ConvNet, conv_hidden
from flowforge.transforms.affine import Affine
from flowforge.transforms.image_coupling import ChannelCoupling, CheckerboardCoupling
from flowforge.transforms.multiscale import Multiscale
from flowforge.transforms.normalization import ActNorm
from flowforge.transforms.reshape import Squeeze


def _checkerboards(
    shape: Image, n: int, context: int, hidden: tuple[int, ...], bound: float
) -> list[Bijection]:
    layers: list[Bijection] = []
    for i in range(n):
        net = ConvNet(shape[0] + context, 2 * shape[0], hidden)
        layers += [CheckerboardCoupling(shape, Affine(bound), net, context=context, parity=i % 2)]
        layers.append(ActNorm(shape))
    return layers


def _channels(
    shape: Image, n: int, context: int, hidden: tuple[int, ...], bound: float
) -> list[Bijection]:
    layers: list[Bijection] = []
    c = shape[0]
    for i in range(n):
        flip = i % 2 == 1
        a = c // 2 if flip else c - c // 2
        net = ConvNet(a + context, 2 * (c - a), hidden)
        layers += [ChannelCoupling(shape, Affine(bound), net, context=context, flip=flip)]
        layers.append(ActNorm(shape))
    return layers


class MultiscaleRealNVP(Preset):
    """RealNVP's multiscale architecture for images ``(C, H, W)``.

    Each scale but the last: ``depth`` checkerboard couplings (alternating colours), a
    squeeze, ``depth`` channel couplings (alternating halves), then half of the channels are
    factored out. The last scale: ``depth + 1`` checkerboard couplings. Affine couplings
    with a bounded log-scale ``B tanh(raw / B)``, each followed by an ActNorm (in place of
    the paper's batch normalisation, which depends on the batch); conv nets with hidden
    layers of ``hidden`` channels and a zero last layer. The latent is a vector of ``C H W``
    values (order: :class:`~flowforge.transforms.Multiscale`).

    Args:
        shape: the image event shape ``(C, H, W)``; ``H`` and ``W`` divisible by
            ``2^(levels - 1)``.
        context: size ``C`` of the context, which has shape ``(*, C)`` (0: unconditional).
        levels: number of scales.
        depth: couplings of each kind per scale.
        hidden: channels of the hidden layers of each coupling's conv net (a single number
            ``h`` means ``(h, h)`` and is deprecated).
        scale_bound: bound ``B`` on each absolute log-scale, ``log s = B tanh(raw / B)``.
        base: latent distribution, whose event shape is the stack's output shape; default a
            standard normal.
        steps: the old name of ``depth`` (deprecated: ``steps`` are optimisation steps).

    References:
        Dinh, Sohl-Dickstein, Bengio (2017). Density estimation using Real NVP.
        arXiv:1605.08803.

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.flows.MultiscaleRealNVP(shape=(1, 8, 8), levels=2, depth=2, hidden=(16, 16))
        >>> flow.log_prob(torch.randn(3, 1, 8, 8)).shape
        torch.Size([3])
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        context: int = 0,
        levels: int = 2,
        depth: int = 3,
        hidden: Sequence[int] = (64, 64),
        scale_bound: float = 3.0,
        base: BaseDistribution | None = None,
        steps: int | None = None,
    ) -> None:
        depth = renamed_steps("MultiscaleRealNVP", steps, depth, "depth")
        hidden = conv_hidden("MultiscaleRealNVP", hidden)
        hparams = preset_hparams({k: v for k, v in locals().items() if k != "steps"})
        c, h, w = image_shape("MultiscaleRealNVP", shape, levels, squeezes=levels - 1)
        stages: list[Bijection] = []
        for level in range(levels):
            if level == levels - 1:
                stages.append(
                    Compose(_checkerboards((c, h, w), depth + 1, context, hidden, scale_bound))
                )
                break
            squeezed: Image = (4 * c, h // 2, w // 2)
            layers = _checkerboards((c, h, w), depth, context, hidden, scale_bound)
            layers.append(Squeeze((c, h, w)))
            layers += _channels(squeezed, depth, context, hidden, scale_bound)
            stages.append(Compose(layers))
            c, h, w = squeezed[0] - squeezed[0] // 2, squeezed[1], squeezed[2]
        super().__init__(hparams, [Multiscale(stages)], base)


__all__ = ["MultiscaleRealNVP"]
