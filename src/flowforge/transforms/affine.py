"""The affine elementwise transformer with a smoothly bounded log-scale."""

from __future__ import annotations

import torch
from torch import Tensor

from flowforge.functional.affine import AffineFunction, bounded_log_scale
from flowforge.functional.dispatch import eager_kernels_allowed
from flowforge.transforms.transformer import Transformer


class Affine(Transformer):
    """Affine transformer ``y = x * exp(s) + t`` with a smoothly bounded log-scale.

    The log-scale is ``s = bound * tanh(h / bound)``
    (:func:`~flowforge.functional.affine.bounded_log_scale`, the one function every path of
    this transformer and the fused kernels use), so ``|s| < bound`` and a large raw output
    cannot blow the scale up; near zero it is the identity map of ``h``. Parameters are
    ``(h, t)`` per dimension; it prefers them blocked (:attr:`Transformer.param_blocked`).

    Args:
        bound: bound on the absolute log-scale.

    References:
        Dinh, Sohl-Dickstein, Bengio (2017). Density estimation using Real NVP.
        arXiv:1605.08803.

    Example:
        >>> import torch
        >>> t = Affine(bound=2.0)
        >>> x, params = torch.randn(4, 3), 10 * torch.randn(4, 3, 2)
        >>> y, ladj = t(x, params)
        >>> bool(ladj.abs().max() <= 2.0), torch.allclose(t.inverse(y, params)[0], x, atol=1e-4)
        (True, True)
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
        return bounded_log_scale(raw, self.bound), shift

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        if (
            torch.is_grad_enabled()
            and (x.requires_grad or params.requires_grad)
            and params.stride(-1) == 1
            and x.shape == params.shape[:-1]
            and eager_kernels_allowed()
        ):
            # Eager training: one node with a hand-written backward (inductor fuses the
            # composition below by itself).
            z, log_scale = AffineFunction.apply(x, params, self.bound)
            return z, log_scale
        log_scale, shift = self._scale_shift(params)
        return x * torch.exp(log_scale) + shift, log_scale

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        log_scale, shift = self._scale_shift(params)
        return (y - shift) * torch.exp(-log_scale), -log_scale

    def extra_repr(self) -> str:
        return f"bound={self.bound}"


__all__ = ["Affine"]
