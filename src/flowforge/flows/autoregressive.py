"""Autoregressive presets: MAF (fast density) and IAF (fast sampling)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from flowforge.flows._common import preset_docs
from flowforge.flows._stack import AffinePreset, StackArgs
from flowforge.transforms.autoregressive import MaskedAutoregressive
from flowforge.transforms.transformer import Transformer


def autoregressive_stack(
    args: StackArgs, make_transformer: Callable[[], Transformer]
) -> list[MaskedAutoregressive]:
    """``args.transforms`` masked autoregressive layers with alternately reversed orders, or
    (``args.permutation == "random"``) a random order per layer.

    The MADE's input degrees replace an explicit permutation layer; a random order is drawn
    from torch's random generator and kept in the MADE's state dict.
    """
    layers = []
    for i in range(args.transforms):
        if args.permutation == "random":
            order = torch.randperm(args.features) + 1
        else:
            order = torch.arange(1, args.features + 1)
            if i % 2 == 1:
                order = order.flip(0)
        t = make_transformer()
        layers.append(MaskedAutoregressive(t, args.made(t.params_per_dim, order)))
    return layers


@preset_docs
class MAF(AffinePreset):
    """Masked autoregressive flow: density in one pass, sampling in ``D`` passes.

    Args:
        transforms: number of affine autoregressive layers, each with its own MADE.
        hidden: hidden sizes ``(H_1, ..., H_k)`` of each MADE.

    References:
        Papamakarios, Pavlakou, Murray (2017). Masked Autoregressive Flow for Density
        Estimation. arXiv:1705.07057.

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.flows.MAF(features=8, context=3, transforms=2, hidden=(32,))
        >>> flow.log_prob(torch.randn(4, 8), torch.randn(4, 3)).shape
        torch.Size([4])
        >>> flow = ff.flows.MAF(features=8, hidden=(32, 32), activation="tanh", dropout=0.1,
        ...                     residual_blocks=2, permutation="random")
        >>> flow.eval().log_prob(torch.randn(4, 8)).shape   # eval: dropout off
        torch.Size([4])
    """

    stack = staticmethod(autoregressive_stack)


@preset_docs
class IAF(AffinePreset):
    """Inverse autoregressive flow: sampling and ``sample_and_log_prob`` in one pass.

    Each layer is a :class:`~flowforge.transforms.MaskedAutoregressive` inverted, so the
    density of arbitrary data costs ``D`` passes per layer (exact, but slow): use IAF as a
    sampler or variational posterior, MAF for density estimation.

    Args:
        transforms: number of inverted affine autoregressive layers, each with its own MADE.
        hidden: hidden sizes ``(H_1, ..., H_k)`` of each MADE.

    References:
        Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling (2016). Improved Variational
        Inference with Inverse Autoregressive Flow. arXiv:1606.04934.

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.flows.IAF(features=4, context=2, transforms=2, hidden=(16,))
        >>> x, lp = flow.sample_and_log_prob(5, context=torch.randn(3, 2))
        >>> x.shape, lp.shape
        (torch.Size([5, 3, 4]), torch.Size([5, 3]))
    """

    stack = staticmethod(autoregressive_stack)
    inverted = True


__all__ = ["IAF", "MAF", "autoregressive_stack"]
