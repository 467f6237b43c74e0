"""Coupling-flow presets: NICE (additive) and RealNVP (affine), for vectors."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from flowforge.core.bijection import Bijection
from flowforge.distributions.base import BaseDistribution
from flowforge.flows._common import Preset, preset_hparams
from flowforge.flows._stack import StackArgs, stack_args
from flowforge.flows.arguments import check_coupling_features
from flowforge.transforms.additive import Additive
from flowforge.transforms.affine import Affine
from flowforge.transforms.coupling import Coupling, half_mask
from flowforge.transforms.normalization import ActNorm
from flowforge.transforms.permutation import Permutation, RandomPermutation, ReversePermutation
from flowforge.transforms.transformer import Transformer


def coupling_stack(args: StackArgs, make_transformer: Callable[[], Transformer]) -> list[Bijection]:
    """``args.transforms`` half-mask couplings with a permutation between each two: the
    reverse one, or (``args.permutation == "random"``) a random one per gap, drawn from
    torch's random generator (a buffer: saved with the weights).

    Raises:
        ValueError: if ``features < 2`` (one half of the features conditions the other).
    """
    features, context = args.features, args.context
    check_coupling_features(args.preset, features)
    layers: list[Bijection] = []
    n_a = (features + 1) // 2
    for i in range(args.transforms):
        if i > 0:
            perm: Permutation = (
                RandomPermutation(features)
                if args.permutation == "random"
                else ReversePermutation(features)
            )
            layers.append(perm)
        t = make_transformer()
        net = args.mlp(n_a + context, (features - n_a) * t.params_per_dim)
        layers.append(Coupling(half_mask(features), t, net, context=context))
    return layers


class NICE(Preset):
    """NICE: additive couplings (volume preserving) and a final learned diagonal scaling.

    Args:
        features: dimension ``D >= 2`` of the data, which has shape ``(*, D)``.
        context: size ``C`` of the context, which has shape ``(*, C)`` (0: unconditional).
        transforms: number of additive coupling layers.
        hidden: hidden sizes ``(H_1, ..., H_k)`` of each conditioner network.
        activation: activation of the conditioner networks' hidden layers, one of ``"relu"``,
            ``"tanh"``, ``"elu"``, ``"gelu"``, ``"silu"``, ``"leaky_relu"`` (the first, the
            default, is the only one the fused kernels implement).
        dropout: probability in ``[0, 1)`` of zeroing each hidden activation of the conditioner
            networks, in training mode only (``flow.train()``; ``flow.eval()`` is
            deterministic).
        residual_blocks: 0 for plain conditioner networks; ``k > 0`` for residual ones (an input
            layer to width ``H``, ``k`` pre-activation residual blocks of ``len(hidden)`` layers
            of width ``H``, an output layer), ``hidden`` then holding one width ``(H, ..., H)``.
        permutation: ``"reverse"``: the features reversed between each two coupling layers;
            ``"random"``: a fixed random permutation in each of those places, drawn from torch's
            random generator at construction and saved with the weights.
        base: latent distribution, whose event shape is the stack's output shape; default a
            standard normal.

    References:
        Dinh, Krueger, Bengio (2014). NICE: Non-linear Independent Components Estimation.
        arXiv:1410.8516.

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.flows.NICE(features=4, transforms=3, hidden=(32,))
        >>> flow.log_prob(torch.randn(8, 4)).shape
        torch.Size([8])
    """

    def __init__(
        self,
        features: int,
        *,
        context: int = 0,
        transforms: int = 4,
        hidden: Sequence[int] = (128, 128),
        activation: str = "relu",
        dropout: float = 0.0,
        residual_blocks: int = 0,
        permutation: str = "reverse",
        base: BaseDistribution | None = None,
    ) -> None:
        hparams = preset_hparams(locals())
        stack = coupling_stack(stack_args(type(self).__name__, hparams), Additive)
        super().__init__(hparams, [*stack, ActNorm(features)], base)


class RealNVP(Preset):
    """RealNVP for vectors: affine couplings with smoothly bounded log-scales.

    Args:
        features: dimension ``D >= 2`` of the data, which has shape ``(*, D)``.
        context: size ``C`` of the context, which has shape ``(*, C)`` (0: unconditional).
        transforms: number of affine coupling layers, a permutation between each two.
        hidden: hidden sizes ``(H_1, ..., H_k)`` of each conditioner network.
        scale_bound: bound ``B`` on each absolute log-scale, ``log s = B tanh(raw / B)``.
        activation: activation of the conditioner networks' hidden layers, one of ``"relu"``,
            ``"tanh"``, ``"elu"``, ``"gelu"``, ``"silu"``, ``"leaky_relu"`` (the first, the
            default, is the only one the fused kernels implement).
        dropout: probability in ``[0, 1)`` of zeroing each hidden activation of the conditioner
            networks, in training mode only (``flow.train()``; ``flow.eval()`` is
            deterministic).
        residual_blocks: 0 for plain conditioner networks; ``k > 0`` for residual ones (an input
            layer to width ``H``, ``k`` pre-activation residual blocks of ``len(hidden)`` layers
            of width ``H``, an output layer), ``hidden`` then holding one width ``(H, ..., H)``.
        permutation: ``"reverse"``: the features reversed between each two coupling layers;
            ``"random"``: a fixed random permutation in each of those places, drawn from torch's
            random generator at construction and saved with the weights.
        base: latent distribution, whose event shape is the stack's output shape; default a
            standard normal.

    References:
        Dinh, Sohl-Dickstein, Bengio (2017). Density estimation using Real NVP.
        arXiv:1605.08803.

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.flows.RealNVP(features=4, context=2, transforms=2, hidden=(32,))
        >>> flow.sample(5, context=torch.randn(3, 2)).shape
        torch.Size([5, 3, 4])
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
        stack = coupling_stack(
            stack_args(type(self).__name__, hparams), lambda: Affine(scale_bound)
        )
        super().__init__(hparams, stack, base)


__all__ = ["NICE", "RealNVP", "coupling_stack"]
