"""Coupling-flow presets: NICE (additive) and RealNVP (affine), for vectors."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from flowforge.core.bijection import Bijection, Compose
from flowforge.core.flow import Flow
from flowforge.distributions.base import BaseDistribution
from flowforge.flows._common import default_base, preset_hparams
from flowforge.nn.mlp import MLP
from flowforge.transforms.coupling import Coupling, half_mask
from flowforge.transforms.elementwise import Additive, Affine, Transformer
from flowforge.transforms.normalization import ActNorm
from flowforge.transforms.permutation import ReversePermutation


def coupling_stack(
    features: int,
    context: int,
    transforms: int,
    hidden: Sequence[int],
    make_transformer: Callable[[], Transformer],
) -> list[Bijection]:
    """``transforms`` half-mask couplings with a reverse permutation between each two."""
    layers: list[Bijection] = []
    n_a = (features + 1) // 2
    for i in range(transforms):
        if i > 0:
            layers.append(ReversePermutation(features))
        t = make_transformer()
        net = MLP(n_a + context, (features - n_a) * t.params_per_dim, hidden)
        layers.append(Coupling(half_mask(features), t, net, context))
    return layers


def _check_coupling(name: str, features: int) -> None:
    if features < 2:
        raise ValueError(f"{name}: coupling needs features >= 2, got {features}")


class NICE(Flow):
    """NICE: additive couplings (volume preserving) and a final learned diagonal scaling.

    Args:
        features: data dimension ``D`` (at least 2).
        context: context size ``C`` (0: unconditional).
        transforms: number of coupling layers.
        hidden: hidden sizes of each coupling network.
        base: base distribution (default standard normal).

    References:
        Dinh, Krueger, Bengio (2014). NICE. arXiv:1410.8516.

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.flows.NICE(features=4, transforms=3, hidden=(32,))
        >>> flow.log_prob(torch.randn(8, 4)).shape
        torch.Size([8])
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 4,
        hidden: Sequence[int] = (128, 128),
        base: BaseDistribution | None = None,
    ) -> None:
        hparams = preset_hparams("NICE", locals())
        _check_coupling("NICE", features)
        layers = coupling_stack(features, context, transforms, hidden, Additive)
        layers.append(ActNorm(features))
        super().__init__(Compose(layers), default_base(features, base), context)
        self.hparams = hparams


class RealNVP(Flow):
    """RealNVP for vectors: affine couplings with smoothly bounded log-scales.

    Args:
        features: data dimension ``D`` (at least 2).
        context: context size ``C`` (0: unconditional).
        transforms: number of coupling layers.
        hidden: hidden sizes of each coupling network.
        scale_bound: bound on each absolute log-scale.
        base: base distribution (default standard normal).

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
        context: int = 0,
        transforms: int = 5,
        hidden: Sequence[int] = (128, 128),
        scale_bound: float = 3.0,
        base: BaseDistribution | None = None,
    ) -> None:
        hparams = preset_hparams("RealNVP", locals())
        _check_coupling("RealNVP", features)
        layers = coupling_stack(features, context, transforms, hidden, lambda: Affine(scale_bound))
        super().__init__(Compose(layers), default_base(features, base), context)
        self.hparams = hparams


__all__ = ["NICE", "RealNVP", "coupling_stack"]
