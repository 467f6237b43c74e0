"""The affine transformer's bounded log-scale, and the transformer as one autograd node.

Every path that applies :class:`~flowforge.transforms.Affine` (its module path, its autograd
node :class:`AffineFunction`, the fused masked autoregressive and coupling kernels and their
plain references) computes the log-scale with :func:`bounded_log_scale` and differentiates
it with :func:`bounded_log_scale_backward`: changing how Affine bounds its scale is an edit of
these two functions, and every path follows (``tests/test_affine_formula.py`` checks it).

References:
    Dinh, Sohl-Dickstein, Bengio (2017). Density estimation using Real NVP. arXiv:1605.08803.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def bounded_log_scale(raw: Tensor, bound: float, out: Tensor | None = None) -> Tensor:
    """The log-scale ``s = bound * tanh(raw / bound)``: ``|s| < bound``, ``s ~ raw`` near 0.

    Computed as ``2 bound sigmoid(2 raw / bound) - bound``, the same function (to a few
    ulps of ``bound``): torch's CPU ``tanh`` is 4-6x slower than its ``sigmoid``, and the
    log-scale is a visible part of a MAF layer's time.

    Args:
        raw: the network's raw log-scale, shape ``(*)``.
        bound: the bound on ``|s|``.
        out: ``None``: a new tensor, differentiable (the module path, the references);
            a tensor of ``raw``'s shape (``raw`` itself to work in place): the result is
            written there, without autograd (the kernels' buffers).

    Returns:
        ``s``, shape ``(*)`` (``out`` when given).

    Example:
        >>> raw = torch.tensor([-50.0, 0.0, 0.5])
        >>> bounded_log_scale(raw, 3.0)
        tensor([-3.0000,  0.0000,  0.4954])
    """
    # One sequence of ops for both uses: with out=None each op returns a fresh tensor.
    u = torch.mul(raw, 2.0 / bound, out=out)
    u = torch.sigmoid(u, out=out)
    u = torch.mul(u, 2.0 * bound, out=out)
    return torch.sub(u, bound, out=out)


def bounded_log_scale_backward(
    grad: Tensor, log_scale: Tensor, bound: float, out: Tensor | None = None
) -> Tensor:
    """``grad * ds/draw`` from ``s = bounded_log_scale(raw, bound)`` alone: ``1 - (s / bound)^2``.

    Written in terms of the output, so a kernel keeps ``s`` (which it needs anyway) and not
    ``raw``. ``out`` as in :func:`bounded_log_scale`: ``None`` for a differentiable result
    (exact higher derivatives), else written there (it may be ``grad``).

    Args:
        grad: the gradient with respect to ``s``, shape ``(*)``.
        log_scale: ``s``, shape ``(*)``.
        bound: the bound the log-scale was computed with.
        out: where to write the result, or ``None``.
    """
    return torch.addcmul(grad, grad * log_scale, log_scale, value=-1.0 / (bound * bound), out=out)


class AffineFunction(torch.autograd.Function):
    """``(x * exp(s) + t, s)`` with ``s = bounded_log_scale(raw, bound)``, one autograd node.

    ``params`` is ``(*, D, 2)`` (raw log-scale, shift), contiguous in its last dimension;
    ``x`` is ``(*, D)``. The backward is written out: ``dz/dx = e^s``, ``dz/dt = 1``,
    ``d(z, s)/ds = (x e^s, 1)``, ``ds/draw`` from :func:`bounded_log_scale_backward`, in 4
    kernels instead of the ~12 nodes autograd records for the composition. It saves ``x``,
    ``params``, ``s`` and ``e^s``.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, params: Tensor, bound: float) -> tuple[Tensor, Tensor]:
        raw, shift = params.unbind(-1)
        log_scale = bounded_log_scale(raw, bound, out=raw.new_empty(raw.shape))
        scale = torch.exp(log_scale)
        ctx.save_for_backward(x, params, log_scale, scale)
        ctx.bound = bound
        return torch.addcmul(shift, x, scale), log_scale

    @staticmethod
    def backward(ctx: Any, grad_z: Tensor, grad_s: Tensor) -> tuple[Tensor | None, ...]:
        x, params, log_scale, scale = ctx.saved_tensors
        bound: float = ctx.bound
        if torch.is_grad_enabled():
            # create_graph=True: the same formulas in differentiable ops of the inputs, so
            # higher derivatives are exact (log_scale and scale were computed untracked).
            log_scale = bounded_log_scale(params[..., 0], bound)
            g_xe = grad_z * torch.exp(log_scale)
            ds = grad_s + g_xe * x
            g_raw = bounded_log_scale_backward(ds, log_scale, bound)
            return g_xe, torch.stack([g_raw, grad_z], -1), None
        grad_xe = grad_z * scale  # dL/dz * e: the gradient of x
        grad_x = grad_xe if ctx.needs_input_grad[0] else None
        grad_params = None
        if ctx.needs_input_grad[1]:
            grad_params = grad_z.new_empty((*grad_z.shape, 2))
            g_raw, g_shift = grad_params.unbind(-1)
            ds = torch.addcmul(grad_s, grad_xe, x)  # dL/ds = dL/dz * x e + dL/dladj
            bounded_log_scale_backward(ds, log_scale, bound, out=g_raw)
            g_shift.copy_(grad_z)
        return grad_x, grad_params, None


__all__ = ["AffineFunction", "bounded_log_scale", "bounded_log_scale_backward"]
