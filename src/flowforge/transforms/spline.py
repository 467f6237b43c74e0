"""The monotonic rational-quadratic spline elementwise transformer."""

from __future__ import annotations

from torch import Tensor

from flowforge.core.bijection import overrides
from flowforge.functional.splines import (
    rational_quadratic_spline,
    rational_quadratic_spline_value,
)
from flowforge.transforms.transformer import Transformer


class RationalQuadraticSpline(Transformer):
    """Monotonic rational-quadratic spline on ``[-bound, bound]`` with identity tails.

    Takes its parameters parameter-major (:attr:`Transformer.param_major`): the spline
    kernel works on one contiguous slab per parameter.

    Args:
        bins: number of bins ``K``; takes ``3K - 1`` parameters per dimension.
        bound: half-width of the spline's interval.

    References:
        Durkan, Bekasov, Murray, Papamakarios (2019). Neural Spline Flows. arXiv:1906.04032.

    Example:
        >>> import torch
        >>> t = RationalQuadraticSpline(bins=4)
        >>> x, params = torch.randn(2, 3), torch.randn(2, 3, t.params_per_dim)
        >>> y, ladj = t(x, params)
        >>> torch.allclose(t.inverse(y, params)[0], x, atol=1e-4)
        True
        >>> torch.equal(t.inverse_value(y, params), t.inverse(y, params)[0])  # no ladj
        True
    """

    def __init__(self, bins: int = 8, bound: float = 5.0) -> None:
        super().__init__()
        if bins < 1:
            raise ValueError(f"expected bins >= 1, got {bins}")
        self.bins = int(bins)
        self.bound = float(bound)
        self.params_per_dim = 3 * self.bins - 1
        self.param_major = True

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return rational_quadratic_spline(x, params, self.bound)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return rational_quadratic_spline(y, params, self.bound, inverse=True)

    def inverse_value(self, y: Tensor, params: Tensor) -> Tensor:
        if overrides(self, RationalQuadraticSpline, "inverse"):
            return self.inverse(y, params)[0]  # a subclass's own inverse
        # The same bins and formula, without the log-determinant's terms.
        return rational_quadratic_spline_value(y, params, self.bound, inverse=True)

    def extra_repr(self) -> str:
        return f"bins={self.bins}, bound={self.bound}"


__all__ = ["RationalQuadraticSpline"]
