"""Glow: ActNorm, invertible 1x1 convolutions and affine couplings, over several scales."""

from __future__ import annotations

from collections.abc import Sequence

from flowforge.core.bijection import Bijection, Compose
from flowforge.distributions.base import BaseDistribution
from flowforge.flows._common import Preset, preset_hparams
from flowforge.flows.arguments import Image, image_shape, renamed_steps
from flowforge.nn.conv import ConvNet, conv_hidden
from flowforge.transforms.affine import Affine
from flowforge.transforms.conv1x1 import Conv1x1, LUConv1x1
from flowforge.transforms.image_coupling import ChannelCoupling
from flowforge.transforms.multiscale import Multiscale
from flowforge.transforms.normalization import ActNorm
from flowforge.transforms.reshape import Squeeze
from flowforge.transforms.sigmoid_affine import SigmoidAffine


def split_prior(shape: Image, *, context: int, hidden: Sequence[int]) -> ChannelCoupling:
    """Glow's learned prior of the factored (last) channels given the kept (first) ones.

    ``z_f = h_f exp(s(h_k)) + t(h_k)`` with a bounded ``s``: a standard normal on ``z_f`` is
    the prior ``N(-t exp(-s), exp(-2 s))`` on ``h_f``. Zero-initialised: a standard normal.
    """
    c = shape[0]
    kept = c - c // 2
    net = ConvNet(kept + context, 2 * (c // 2), hidden)
    return ChannelCoupling(shape, Affine(3.0), net, context=context)


class Glow(Preset):
    """Glow for images ``(C, H, W)``: per level a squeeze, ``depth`` steps of flow, a split.

    A step is ActNorm, an invertible 1x1 convolution (LU-decomposed unless ``lu=False``) and
    an affine coupling over channels with Glow's scale ``sigmoid(h + 2)`` and a conv net
    ``3x3 -> 1x1 -> 3x3`` with hidden layers of ``hidden`` channels (last layer zero). After each level but the
    last, half of the channels are factored out through the learned split prior (a
    conditional affine map, so the base stays a standard normal). The latent is a vector of
    ``C H W`` values (order: :class:`~flowforge.transforms.Multiscale`). A context vector
    (a one-hot label, say) enters every coupling and split prior as constant channels.

    Args:
        shape: the image event shape ``(C, H, W)``; ``H`` and ``W`` divisible by ``2^levels``.
        context: size ``C`` of the context, which has shape ``(*, C)`` (0: unconditional).
        levels: number of levels ``L``.
        depth: number of steps of flow per level ``K``.
        hidden: channels of the hidden layers of each coupling's (and split prior's) conv net
            (a single number ``h`` means ``(h, h)`` and is deprecated).
        lu: LU-decomposed 1x1 convolutions (``False``: a free weight, ``slogdet`` in float64).
        base: latent distribution, whose event shape is the stack's output shape; default a
            standard normal.
        steps: the old name of ``depth`` (deprecated: ``steps`` are optimisation steps).

    References:
        Kingma, Dhariwal (2018). Glow: Generative Flow with Invertible 1x1 Convolutions.
        arXiv:1807.03039.

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.flows.Glow(shape=(1, 8, 8), levels=2, depth=2, hidden=(16, 16))
        >>> flow.log_prob(torch.randn(3, 1, 8, 8)).shape, flow.sample(2).shape
        (torch.Size([3]), torch.Size([2, 1, 8, 8]))
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        context: int = 0,
        levels: int = 2,
        depth: int = 8,
        hidden: Sequence[int] = (128, 128),
        lu: bool = True,
        base: BaseDistribution | None = None,
        steps: int | None = None,
    ) -> None:
        depth = renamed_steps("Glow", steps, depth, "depth")
        hidden = conv_hidden("Glow", hidden)
        hparams = preset_hparams({k: v for k, v in locals().items() if k != "steps"})
        c, h, w = image_shape("Glow", shape, levels)
        stages: list[Bijection] = []
        for level in range(levels):
            squeezed: Image = (4 * c, h // 2, w // 2)
            layers: list[Bijection] = [Squeeze((c, h, w))]
            for _ in range(depth):
                net = ConvNet(
                    squeezed[0] - squeezed[0] // 2 + context, 2 * (squeezed[0] // 2), hidden
                )
                layers += [
                    ActNorm(squeezed),
                    LUConv1x1(squeezed) if lu else Conv1x1(squeezed),
                    ChannelCoupling(squeezed, SigmoidAffine(), net, context=context),
                ]
            if level < levels - 1:
                layers.append(split_prior(squeezed, context=context, hidden=hidden))
            stages.append(Compose(layers))
            c, h, w = squeezed[0] - squeezed[0] // 2, squeezed[1], squeezed[2]
        super().__init__(hparams, [Multiscale(stages)], base)


__all__ = ["Glow", "split_prior"]
