"""Autoregressive presets: MAF (fast density) and IAF (fast sampling)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from flowforge.core.bijection import Bijection, Compose
from flowforge.core.flow import Flow
from flowforge.distributions.base import BaseDistribution
from flowforge.flows._common import default_base, preset_hparams
from flowforge.nn.made import MADE
from flowforge.transforms.autoregressive import MaskedAutoregressive
from flowforge.transforms.elementwise import Affine, Transformer


def autoregressive_stack(
    features: int,
    context: int,
    transforms: int,
    hidden: Sequence[int],
    make_transformer: Callable[[], Transformer],
) -> list[MaskedAutoregressive]:
    """``transforms`` masked autoregressive layers with alternately reversed orders.

    Reversing the MADE's input degrees replaces an explicit permutation layer.
    """
    layers = []
    for i in range(transforms):
        order = torch.arange(1, features + 1)
        if i % 2 == 1:
            order = order.flip(0)
        t = make_transformer()
        made = MADE(features, t.params_per_dim, hidden, context=context, order=order)
        layers.append(MaskedAutoregressive(t, made))
    return layers


class MAF(Flow):
    """Masked autoregressive flow: density in one pass, sampling in ``D`` passes.

    Args:
        features: data dimension ``D``.
        context: context size ``C`` (0: unconditional).
        transforms: number of autoregressive layers.
        hidden: hidden sizes of each MADE.
        scale_bound: bound on each absolute log-scale.
        base: base distribution (default standard normal).

    References:
        Papamakarios, Pavlakou, Murray (2017). Masked Autoregressive Flow for Density
        Estimation. arXiv:1705.07057.

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.flows.MAF(features=8, context=3, transforms=2, hidden=(32,))
        >>> flow.log_prob(torch.randn(4, 8), torch.randn(4, 3)).shape
        torch.Size([4])
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 5,
        hidden: Sequence[int] = (128, 128),
        scale_bound: float = 3.0,
        base: BaseDistribution | None = None,
    ) -> None:
        hparams = preset_hparams("MAF", locals())
        layers = autoregressive_stack(
            features, context, transforms, hidden, lambda: Affine(scale_bound)
        )
        super().__init__(Compose(layers), default_base(features, base), context)
        self.hparams = hparams


class IAF(Flow):
    """Inverse autoregressive flow: sampling and ``sample_and_log_prob`` in one pass.

    Each layer is a :class:`~flowforge.transforms.MaskedAutoregressive` inverted, so the
    density of arbitrary data costs ``D`` passes per layer (exact, but slow): use IAF as a
    sampler or variational posterior, MAF for density estimation.

    Args:
        features: data dimension ``D``.
        context: context size ``C`` (0: unconditional).
        transforms: number of autoregressive layers.
        hidden: hidden sizes of each MADE.
        scale_bound: bound on each absolute log-scale.
        base: base distribution (default standard normal).

    References:
        Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling (2016). Improved Variational
        Inference with Inverse Autoregressive Flow. arXiv:1606.04934.
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 5,
        hidden: Sequence[int] = (128, 128),
        scale_bound: float = 3.0,
        base: BaseDistribution | None = None,
    ) -> None:
        hparams = preset_hparams("IAF", locals())
        stack = autoregressive_stack(
            features, context, transforms, hidden, lambda: Affine(scale_bound)
        )
        layers: list[Bijection] = [layer.inv for layer in stack]
        super().__init__(Compose(layers), default_base(features, base), context)
        self.hparams = hparams


__all__ = ["IAF", "MAF", "autoregressive_stack"]
