"""Neural spline flows: rational-quadratic spline transformers, autoregressive or coupling."""

from __future__ import annotations

from collections.abc import Sequence

from flowforge.distributions.base import BaseDistribution
from flowforge.flows._common import Preset, preset_hparams
from flowforge.flows._stack import stack_args
from flowforge.flows.arguments import bad_argument
from flowforge.flows.autoregressive import autoregressive_stack
from flowforge.flows.coupling import coupling_stack
from flowforge.transforms.spline import RationalQuadraticSpline


class NSF(Preset):
    """Neural spline flow (RQ-NSF): monotonic rational-quadratic splines with identity tails.

    Autoregressive (one pass for the density, ``D`` to sample) by default; with
    ``coupling=True`` a coupling flow (one pass both ways, needs ``features >= 2``).

    Args:
        features: dimension ``D`` of the data, which has shape ``(*, D)``.
        context: size ``C`` of the context, which has shape ``(*, C)`` (0: unconditional).
        transforms: number of spline layers.
        bins: number ``K`` of spline bins per dimension.
        hidden: hidden sizes ``(H_1, ..., H_k)`` of each conditioner network.
        bound: the splines act on ``[-bound, bound]``, the identity outside.
        coupling: coupling instead of autoregressive conditioners (needs ``D >= 2``).
        activation: activation of the conditioner networks' hidden layers, one of ``"relu"``,
            ``"tanh"``, ``"elu"``, ``"gelu"``, ``"silu"``, ``"leaky_relu"`` (the first, the
            default, is the only one the fused kernels implement).
        dropout: probability in ``[0, 1)`` of zeroing each hidden activation of the conditioner
            networks, in training mode only (``flow.train()``; ``flow.eval()`` is
            deterministic).
        residual_blocks: 0 for plain conditioner networks; ``k > 0`` for residual ones (an input
            layer to width ``H``, ``k`` pre-activation residual blocks of ``len(hidden)`` layers
            of width ``H``, an output layer), ``hidden`` then holding one width ``(H, ..., H)``.
        permutation: ``"reverse"``: the features reversed between each two coupling layers
            (autoregressive: each layer's MADE takes the input order of the one before
            reversed); ``"random"``: a fixed random permutation in each of those places
            (autoregressive: a random input order per layer), drawn from torch's random
            generator at construction and saved with the weights.
        base: latent distribution, whose event shape is the stack's output shape; default a
            standard normal.

    References:
        Durkan, Bekasov, Murray, Papamakarios (2019). Neural Spline Flows. arXiv:1906.04032.

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.flows.NSF(features=2, transforms=2, bins=4, hidden=(16,))
        >>> x, lp = flow.sample_and_log_prob(3)
        >>> torch.allclose(lp, flow.log_prob(x), atol=1e-4)
        True
    """

    def __init__(
        self,
        features: int,
        *,
        context: int = 0,
        transforms: int = 5,
        bins: int = 8,
        hidden: Sequence[int] = (128, 128),
        bound: float = 5.0,
        coupling: bool = False,
        activation: str = "relu",
        dropout: float = 0.0,
        residual_blocks: int = 0,
        permutation: str = "reverse",
        base: BaseDistribution | None = None,
    ) -> None:
        hparams = preset_hparams(locals())
        if bins < 1:
            raise bad_argument("NSF", "bins >= 1", bins)

        def make() -> RationalQuadraticSpline:
            return RationalQuadraticSpline(bins, bound)

        build = coupling_stack if coupling else autoregressive_stack
        stack = build(stack_args(type(self).__name__, hparams), make)
        super().__init__(hparams, stack, base)


__all__ = ["NSF"]
