"""Neural spline flows: rational-quadratic spline transformers, autoregressive or coupling."""

from __future__ import annotations

from collections.abc import Sequence

from flowforge.core.bijection import Bijection, Compose
from flowforge.core.flow import Flow
from flowforge.distributions.base import BaseDistribution
from flowforge.flows._common import default_base, preset_hparams
from flowforge.flows.autoregressive import autoregressive_stack
from flowforge.flows.coupling import coupling_stack
from flowforge.transforms.elementwise import RationalQuadraticSpline


class NSF(Flow):
    """Neural spline flow (RQ-NSF): monotonic rational-quadratic splines with identity tails.

    Autoregressive (one pass for the density, ``D`` to sample) by default; with
    ``coupling=True`` a coupling flow (one pass both ways, needs ``features >= 2``).

    Args:
        features: data dimension ``D``.
        context: context size ``C`` (0: unconditional).
        transforms: number of spline layers.
        bins: spline bins ``K`` per dimension.
        hidden: hidden sizes of each conditioner network.
        bound: the splines act on ``[-bound, bound]``, the identity outside.
        coupling: coupling instead of autoregressive conditioners.
        base: base distribution (default standard normal).

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
        context: int = 0,
        transforms: int = 5,
        bins: int = 8,
        hidden: Sequence[int] = (128, 128),
        bound: float = 5.0,
        coupling: bool = False,
        base: BaseDistribution | None = None,
    ) -> None:
        hparams = preset_hparams("NSF", locals())
        if bins < 1:
            raise ValueError(f"NSF: expected bins >= 1, got {bins}")
        if coupling and features < 2:
            raise ValueError(f"NSF: coupling needs features >= 2, got {features}")

        def make() -> RationalQuadraticSpline:
            return RationalQuadraticSpline(bins, bound)

        layers: list[Bijection]
        if coupling:
            layers = coupling_stack(features, context, transforms, hidden, make)
        else:
            layers = list(autoregressive_stack(features, context, transforms, hidden, make))
        super().__init__(Compose(layers), default_base(features, base), context)
        self.hparams = hparams


__all__ = ["NSF"]
