"""Autoregressive presets: MAF (fast density) and IAF (fast sampling)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from flowforge.core.bijection import Bijection
from flowforge.distributions.base import BaseDistribution
from flowforge.flows._common import Preset, preset_hparams
from flowforge.flows._stack import StackArgs, stack_args
from flowforge.transforms.affine import Affine
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


class MAF(Preset):
    """Masked autoregressive flow: density in one pass, sampling in ``D`` passes.

    Args:
        features: dimension ``D`` of the data, which has shape ``(*, D)``.
        context: size ``C`` of the context, which has shape ``(*, C)`` (0: unconditional).
        transforms: number of affine autoregressive layers, each with its own MADE.
        hidden: hidden sizes ``(H_1, ..., H_k)`` of each MADE.
        scale_bound: bound ``B`` on each absolute log-scale, ``log s = B tanh(raw / B)``.
        activation: activation of each MADE's hidden layers, one of ``"relu"``, ``"tanh"``,
            ``"elu"``, ``"gelu"``, ``"silu"``, ``"leaky_relu"`` (the first, the default, is the
            only one the fused kernels implement).
        dropout: probability in ``[0, 1)`` of zeroing each hidden activation of the MADEs, in
            training mode only (``flow.train()``; ``flow.eval()`` is deterministic).
        residual_blocks: 0 for plain MADEs; ``k > 0`` for residual ones (an input
            layer to width ``H``, ``k`` pre-activation residual blocks of ``len(hidden)`` layers
            of width ``H``, an output layer), ``hidden`` then holding one width ``(H, ..., H)``.
        permutation: ``"reverse"``: each layer's MADE takes the input order of the one before
            reversed; ``"random"``: a random input order per layer, drawn from torch's random
            generator at construction and saved with the weights.
        base: latent distribution, whose event shape is the stack's output shape; default a
            standard normal.

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

    def __init__(
        self,
        features: int,
        *,
        context: int = 0,
        transforms: int = 5,
        hidden: Sequence[int] = (128, 128),
        scale_bound: float = 3.0,
        activation: str = "relu",
        dropout: float = 0.0,
        residual_blocks: int = 0,
        permutation: str = "reverse",
        base: BaseDistribution | None = None,
    ) -> None:
        hparams = preset_hparams(locals())
        stack = autoregressive_stack(
            stack_args(type(self).__name__, hparams), lambda: Affine(scale_bound)
        )
        super().__init__(hparams, stack, base)


class IAF(Preset):
    """Inverse autoregressive flow: sampling and ``sample_and_log_prob`` in one pass.

    Each layer is a :class:`~flowforge.transforms.MaskedAutoregressive` inverted, so the
    density of arbitrary data costs ``D`` passes per layer (exact, but slow): use IAF as a
    sampler or variational posterior, MAF for density estimation.

    Args:
        features: dimension ``D`` of the data, which has shape ``(*, D)``.
        context: size ``C`` of the context, which has shape ``(*, C)`` (0: unconditional).
        transforms: number of inverted affine autoregressive layers, each with its own MADE.
        hidden: hidden sizes ``(H_1, ..., H_k)`` of each MADE.
        scale_bound: bound ``B`` on each absolute log-scale, ``log s = B tanh(raw / B)``.
        activation: activation of each MADE's hidden layers, one of ``"relu"``, ``"tanh"``,
            ``"elu"``, ``"gelu"``, ``"silu"``, ``"leaky_relu"`` (the first, the default, is the
            only one the fused kernels implement).
        dropout: probability in ``[0, 1)`` of zeroing each hidden activation of the MADEs, in
            training mode only (``flow.train()``; ``flow.eval()`` is deterministic).
        residual_blocks: 0 for plain MADEs; ``k > 0`` for residual ones (an input
            layer to width ``H``, ``k`` pre-activation residual blocks of ``len(hidden)`` layers
            of width ``H``, an output layer), ``hidden`` then holding one width ``(H, ..., H)``.
        permutation: ``"reverse"``: each layer's MADE takes the input order of the one before
            reversed; ``"random"``: a random input order per layer, drawn from torch's random
            generator at construction and saved with the weights.
        base: latent distribution, whose event shape is the stack's output shape; default a
            standard normal.

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

    def __init__(
        self,
        features: int,
        *,
        context: int = 0,
        transforms: int = 5,
        hidden: Sequence[int] = (128, 128),
        scale_bound: float = 3.0,
        activation: str = "relu",
        dropout: float = 0.0,
        residual_blocks: int = 0,
        permutation: str = "reverse",
        base: BaseDistribution | None = None,
    ) -> None:
        hparams = preset_hparams(locals())
        stack = autoregressive_stack(
            stack_args(type(self).__name__, hparams), lambda: Affine(scale_bound)
        )
        layers: list[Bijection] = [layer.inv for layer in stack]  # the sampling direction
        super().__init__(hparams, layers, base)


__all__ = ["IAF", "MAF", "autoregressive_stack"]
