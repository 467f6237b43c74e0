"""Elementwise transformers: monotonic maps of each dimension given its parameters.

A transformer is a pure function of ``(x, params)``; a conditioner (coupling or masked
autoregressive) decides where ``params`` come from. Parameters have shape
``(*, D, params_per_dim)`` and log-determinants are returned elementwise, ``(*, D)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowforge.functional.splines import rational_quadratic_spline


class Transformer(nn.Module):
    """Base class of elementwise transformers.

    Attributes:
        params_per_dim: number of parameters each dimension takes.
    """

    params_per_dim: int = 1
    # Whether the transformer is fastest with parameters laid out parameter-major in memory.
    param_major: bool = False
    # Whether it is fastest with each parameter a slice contiguous along D, memory (*, P, D).
    param_blocked: bool = False

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``x`` ``(*, D)`` with ``params`` ``(*, D, P)``; returns ``(y, ladj)`` ``(*, D)``."""
        raise NotImplementedError

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Invert :meth:`forward`; returns ``(x, log|dx/dy|)`` elementwise."""
        raise NotImplementedError


class Additive(Transformer):
    """Additive (volume-preserving) transformer ``y = x + t``.

    References:
        Dinh, Krueger, Bengio (2014). NICE: Non-linear Independent Components Estimation.
        arXiv:1410.8516.
    """

    params_per_dim = 1

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return x + params.squeeze(-1), torch.zeros_like(x)  # a view backward, no scatter

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return y - params.squeeze(-1), torch.zeros_like(y)


class Affine(Transformer):
    """Affine transformer ``y = x * exp(s) + t`` with a smoothly bounded log-scale.

    The log-scale is ``s = bound * tanh(h / bound)``, so ``|s| < bound`` and a large raw
    output cannot blow the scale up; near zero it is the identity map of ``h``.

    Args:
        bound: bound on the absolute log-scale.

    References:
        Dinh, Sohl-Dickstein, Bengio (2017). Density estimation using Real NVP.
        arXiv:1605.08803.
    """

    params_per_dim = 2
    param_blocked = True

    def __init__(self, bound: float = 3.0) -> None:
        super().__init__()
        self.bound = float(bound)

    def _scale_shift(self, params: Tensor) -> tuple[Tensor, Tensor]:
        # unbind, not two [..., i]: one stack in the backward instead of two zero-filled
        # scatters of the whole parameter tensor.
        # Blocked parameters (memory (*, P, D), see MADE(blocked=True)) are unbound along
        # their slab axis, so the backward stacks them back into that layout with no copy.
        if params.stride(-1) != 1:
            raw, shift = params.transpose(-1, -2).unbind(-2)
        else:
            raw, shift = params.unbind(-1)
        return self.bound * torch.tanh(raw / self.bound), shift

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        log_scale, shift = self._scale_shift(params)
        return x * torch.exp(log_scale) + shift, log_scale

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        log_scale, shift = self._scale_shift(params)
        return (y - shift) * torch.exp(-log_scale), -log_scale

    def extra_repr(self) -> str:
        return f"bound={self.bound}"


class RationalQuadraticSpline(Transformer):
    """Monotonic rational-quadratic spline on ``[-bound, bound]`` with identity tails.

    Args:
        bins: number of bins ``K``; takes ``3K - 1`` parameters per dimension.
        bound: half-width of the spline's interval.

    References:
        Durkan, Bekasov, Murray, Papamakarios (2019). Neural Spline Flows. arXiv:1906.04032.
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

    def extra_repr(self) -> str:
        return f"bins={self.bins}, bound={self.bound}"


__all__ = ["Additive", "Affine", "RationalQuadraticSpline", "Transformer"]
