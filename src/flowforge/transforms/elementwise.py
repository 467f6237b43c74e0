"""Elementwise transformers: monotonic maps of each dimension given its parameters.

A transformer is a pure function of ``(x, params)``; a conditioner (coupling or masked
autoregressive) decides where ``params`` come from. Parameters have shape
``(*, D, params_per_dim)`` and log-determinants are returned elementwise, ``(*, D)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from flowforge.functional.made_affine import tanh_via_sigmoid_
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


class AffineFunction(torch.autograd.Function):
    """``(x * exp(s) + t, s)`` with ``s = bound * tanh(raw / bound)``, one autograd node.

    ``params`` is ``(*, D, 2)`` (raw log-scale, shift). The backward is written out:
    ``dz/dx = e``, ``dz/dt = 1``, ``d(z, s)/ds = (x e, 1)``, ``ds/draw = 1 - tanh^2``,
    in 4 kernels instead of the ~12 nodes autograd records for the composition.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, params: Tensor, bound: float) -> tuple[Tensor, Tensor]:
        raw, shift = params.unbind(-1)
        th = tanh_via_sigmoid_(raw * (2.0 / bound))  # tanh(raw / bound), 4-6x faster
        log_scale = th * bound
        scale = torch.exp(log_scale)
        ctx.save_for_backward(x, params, th, scale)
        ctx.bound = bound
        return torch.addcmul(shift, x, scale), log_scale

    @staticmethod
    def backward(ctx: Any, grad_z: Tensor, grad_s: Tensor) -> tuple[Tensor | None, ...]:
        x, params, th, scale = ctx.saved_tensors
        if torch.is_grad_enabled():
            # create_graph=True: the same formulas in differentiable ops of the inputs, so
            # higher derivatives are exact (th and scale were computed untracked).
            th = 2.0 * torch.sigmoid(params[..., 0] * (2.0 / ctx.bound)) - 1.0
            scale = torch.exp(th * ctx.bound)
            g_xe = grad_z * scale
            ds = grad_s + g_xe * x
            g_params = torch.stack([ds * (1 - th * th), grad_z], -1)
            return g_xe, g_params, None
        grad_xe = grad_z * scale  # dL/dz * e: the gradient of x
        grad_x = grad_xe if ctx.needs_input_grad[0] else None
        grad_params = None
        if ctx.needs_input_grad[1]:
            grad_params = grad_z.new_empty((*grad_z.shape, 2))
            g_raw, g_shift = grad_params.unbind(-1)
            ds = torch.addcmul(grad_s, grad_xe, x)  # dL/ds = dL/dz * x e + dL/dladj
            torch.addcmul(ds, ds * th, th, value=-1.0, out=g_raw)  # * (1 - tanh^2)
            g_shift.copy_(grad_z)
        return grad_x, grad_params, None


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
        # bound * tanh(raw / bound), computed as bound * (2 sigmoid(2 raw / bound) - 1):
        # the same function, and torch's CPU tanh is 4-6x slower than its sigmoid.
        return torch.sigmoid(raw * (2.0 / self.bound)) * (2.0 * self.bound) - self.bound, shift

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        if (
            torch.is_grad_enabled()
            and (x.requires_grad or params.requires_grad)
            and params.stride(-1) == 1
            and x.shape == params.shape[:-1]
            and not torch.compiler.is_compiling()
            and not torch._C._are_functorch_transforms_active()
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
