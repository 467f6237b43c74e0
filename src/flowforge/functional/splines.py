"""Monotonic rational-quadratic splines with identity (linear) tails.

With gradients (eager), each chunk of the spline is one autograd node with a written-out
backward that keeps ~33 floats per element at 8 bins (the plain composition keeps several
times more until the backward); without gradients, or under ``torch.compile`` (inductor fuses
the composition), the plain ops. Both give the same values and gradients (tested in float64).

References:
    Durkan, Bekasov, Murray, Papamakarios (2019). Neural Spline Flows. arXiv:1906.04032.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from flowforge.functional.dispatch import eager_kernels_allowed
from flowforge.functional.spline_bins import _bin, _full, _in_bin, _spline, _table
from flowforge.functional.spline_knots import suffix_sums

DEFAULT_MIN_WIDTH = 1e-3
DEFAULT_MIN_HEIGHT = 1e-3
DEFAULT_MIN_DERIVATIVE = 1e-3


CHUNK = 1 << 15


def rational_quadratic_spline(
    x: Tensor,
    params: Tensor,
    bound: float = 5.0,
    inverse: bool = False,
    min_width: float = DEFAULT_MIN_WIDTH,
    min_height: float = DEFAULT_MIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[Tensor, Tensor]:
    """Apply an elementwise monotonic rational-quadratic spline (or its inverse).

    Inside ``[-bound, bound]`` the map is a spline of ``K`` bins; outside it is the identity,
    so inputs far outside (``|x| = 1e4``) pass through with finite values and gradients. The
    interior branch is always computed on clamped inputs, so the unused branch can produce
    no NaN gradients.

    Args:
        x: inputs, shape ``(*)``.
        params: unnormalised parameters, shape ``(*, 3K - 1)``: ``K`` width logits, ``K``
            height logits and ``K - 1`` interior derivative pre-activations.
        bound: half-width of the spline's interval.
        inverse: apply the inverse map instead.
        min_width: minimum bin width as a fraction of the interval.
        min_height: minimum bin height as a fraction of the interval.
        min_derivative: minimum derivative at the knots.

    Returns:
        ``(y, ladj)``, both of shape ``(*)``: outputs and elementwise ``log|dy/dx|``.

    Example:
        >>> import torch
        >>> x = torch.linspace(-6, 6, 5)
        >>> y, ladj = rational_quadratic_spline(x, torch.zeros(5, 3 * 4 - 1))
        >>> torch.allclose(y, x), torch.allclose(ladj, torch.zeros(5), atol=1e-6)
        (True, True)
    """
    args = (bound, inverse, min_width, min_height, min_derivative)
    y, ladj = _laid_out(x, params, *args, with_ladj=True)
    assert ladj is not None
    return y, ladj


def rational_quadratic_spline_value(
    x: Tensor,
    params: Tensor,
    bound: float = 5.0,
    inverse: bool = False,
    min_width: float = DEFAULT_MIN_WIDTH,
    min_height: float = DEFAULT_MIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> Tensor:
    """The outputs of :func:`rational_quadratic_spline` alone, without the log-determinant.

    The same bins and the same in-bin formula (one function computes both); only the
    log-determinant's terms are skipped, which saves about a tenth of a spline inverse
    (autoregressive sampling). With gradients it is the full kernel's output.

    Args:
        x: inputs, shape ``(*)``; the other arguments as in :func:`rational_quadratic_spline`.
        params: unnormalised parameters, shape ``(*, 3K - 1)``.

    Returns:
        ``y`` of shape ``(*)``, equal to ``rational_quadratic_spline(...)[0]``.

    Example:
        >>> import torch
        >>> x, p = torch.randn(4, 3), torch.randn(4, 3, 3 * 5 - 1)
        >>> y = rational_quadratic_spline_value(x, p, inverse=True)
        >>> torch.equal(y, rational_quadratic_spline(x, p, inverse=True)[0])
        True
    """
    args = (bound, inverse, min_width, min_height, min_derivative)
    return _laid_out(x, params, *args, with_ladj=False)[0]


def _laid_out(
    x: Tensor,
    params: Tensor,
    bound: float,
    inverse: bool,
    min_width: float,
    min_height: float,
    min_derivative: float,
    with_ladj: bool,
) -> tuple[Tensor, Tensor | None]:
    """Check ``params`` ``(*, 3K - 1)`` and bring it to the parameter-major layout for
    :func:`_chunked`; ``(y, ladj)``, ``ladj`` ``None`` unless ``with_ladj``."""
    k = (params.shape[-1] + 1) // 3
    if params.shape[-1] != 3 * k - 1 or k < 1:
        raise ValueError(f"expected params of shape (*, 3K - 1), got last dim {params.shape[-1]}")
    args = (k, bound, inverse, min_width, min_height, min_derivative)
    pm = torch.movedim(params, -1, 0)  # (3K - 1, *): parameter-major
    if (
        x.dim() >= 2
        and params.shape[:-1] == x.shape
        and not pm.is_contiguous()
        and pm.transpose(-1, -2).is_contiguous()
    ):
        # Parameters laid out (3K - 1, ..., D, B) in memory (see MADE(param_major=True)):
        # work in the transposed frame, where they are contiguous, and copy x instead.
        y, ladj = _chunked(x.transpose(-1, -2).contiguous(), pm.transpose(-1, -2), *args, with_ladj)
        return y.transpose(-1, -2), None if ladj is None else ladj.transpose(-1, -2)
    if params.shape[:-1] != x.shape:
        shape = torch.broadcast_shapes(x.shape, params.shape[:-1])
        x, pm = x.expand(shape), pm.expand(pm.shape[0], *shape)
    # One transposing copy to the parameter-major layout: every later op then works on
    # contiguous slabs shaped like x.
    return _chunked(x, pm.contiguous(), *args, with_ladj)


def _chunked(
    x: Tensor,
    p: Tensor,
    k: int,
    bound: float,
    inverse: bool,
    min_width: float,
    min_height: float,
    min_derivative: float,
    with_ladj: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """The spline of contiguous ``x`` ``(*)`` and ``p`` ``(3K - 1, *)``, chunk by chunk.

    With gradients each chunk is one :class:`_SplineFunction` node where
    :func:`~flowforge.functional.dispatch.eager_kernels_allowed` (its ``ladj`` dropped
    unless ``with_ladj``); without, when compiling (inductor fuses the plain composition) or
    under ``torch.func``, the plain ops, which skip the log-determinant unless ``with_ladj``.
    """
    args = (k, bound, inverse, min_width, min_height, min_derivative)
    if torch.compiler.is_compiling():
        return _spline(x, p, *args, with_ladj)
    # Not under torch.func or plain_modules(): the plain ops.
    node = torch.is_grad_enabled() and (x.requires_grad or p.requires_grad)
    node = node and eager_kernels_allowed()

    def fn(xc: Tensor, pc: Tensor) -> tuple[Tensor, Tensor | None]:
        return _SplineFunction.apply(xc, pc, *args) if node else _spline(xc, pc, *args, with_ladj)

    n = x.numel()
    if n <= 2 * CHUNK:
        y, ladj = fn(x, p)
        return y, ladj if with_ladj else None
    # Large inputs in chunks (every op is elementwise over the batch): several times faster.
    xs, ps = x.reshape(n).split(CHUNK), p.reshape(p.shape[0], n).split(CHUNK, 1)
    ys, ladjs = zip(*(fn(xc, pc) for xc, pc in zip(xs, ps)))
    y = torch.cat(ys).view(x.shape)
    return y, torch.cat(ladjs).view(x.shape) if with_ladj else None


def _in_bin_backward(
    x: Tensor, ends: Tensor, bound: float, gy: Tensor, gl: Tensor
) -> tuple[Tensor, Tensor]:
    """Gradients of the forward :func:`_in_bin` w.r.t. ``x`` and ``ends``, written out.

    With ``theta = (x - x0) / w``, ``s = h / w``, ``t = theta (1 - theta)``,
    ``den = s + (d0 + d1 - 2 s) t``, ``num = s theta^2 + d0 t`` and
    ``m = d1 theta^2 + 2 s t + d0 (1 - theta)^2``: ``y = y0 + h num / den`` and
    ``ladj = 2 log s + log m - 2 log den``.
    """
    x0, x1, y0, y1, d0, d1 = ends.flatten(0, 1).unbind(0)
    inside = (x >= -bound) & (x <= bound)
    zero = gy.new_zeros(())
    gyi = torch.where(inside, gy, zero)
    gli = torch.where(inside, gl, zero)
    w, h = x1 - x0, y1 - y0
    s = h / w
    raw = (x.clamp(-bound, bound) - x0) / w
    theta = raw.clamp(0.0, 1.0)
    omt = 1.0 - theta
    t = theta * omt
    curv = d0 + d1 - 2.0 * s
    den = s + curv * t
    num = s * theta.square() + d0 * t
    m = d1 * theta.square() + 2.0 * s * t + d0 * omt.square()
    r = 1.0 / den
    g_num = gyi * h * r
    g_den = -(g_num * num + 2.0 * gli) * r
    g_m = gli / m
    dt = omt - theta  # dt / dtheta
    g_theta = (
        g_num * (2.0 * s * theta + d0 * dt)
        + g_den * curv * dt
        + 2.0 * g_m * (d1 * theta + s * dt - d0 * omt)
    )
    # clamp(0, 1) passes the gradient only inside [0, 1] (rounding can step just outside).
    g_theta = torch.where((raw >= 0.0) & (raw <= 1.0), g_theta, zero)
    g_s = g_num * theta.square() + g_den * (1.0 - 2.0 * t) + 2.0 * (g_m * t + gli / s)
    g_d0 = (g_num + g_den) * t + g_m * omt.square()
    g_d1 = g_den * t + g_m * theta.square()
    g_h = gyi * num * r + g_s / w
    g_w = -(g_s * s + g_theta * theta) / w
    g_x0 = -g_theta / w - g_w
    g_ends = torch.stack([g_x0, g_w, gyi - g_h, g_h, g_d0, g_d1]).view(ends.shape)
    gx = torch.where(inside, g_theta / w, gy)
    return gx, g_ends


class _SplineFunction(torch.autograd.Function):
    """One chunk of the spline as one autograd node that saves little.

    Through plain autograd the spline keeps ~30 intermediates alive until the backward, many
    of them ``K + 1`` floats per element. This node saves ``x``, the raw parameters, each
    input's bin and the six values at its ends. The backward differentiates the in-bin part
    (recomputed from those six values, a few elementwise ops) by autograd and writes the rest
    out: the ends' gradients scattered to their knots, the cumulative sum's backward (a
    reversed cumulative sum), the softmax's and the softplus's. Under ``create_graph`` it
    differentiates the whole composition instead, so higher derivatives stay exact.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        p: Tensor,
        k: int,
        bound: float,
        inverse: bool,
        min_width: float,
        min_height: float,
        min_derivative: float,
    ) -> tuple[Tensor, Tensor]:
        table = _table(p, k, bound, min_width, min_height, min_derivative)
        idx, both = _bin(x, table, bound, inverse)
        ends = table.gather(1, both)
        del table
        ctx.args = (k, bound, inverse, min_width, min_height, min_derivative)
        ctx.save_for_backward(x, p, idx, ends)
        return _full(_in_bin(x, ends, bound, inverse))

    @staticmethod
    def backward(ctx: Any, gy: Tensor, gl: Tensor) -> tuple[Tensor | None, ...]:
        x, p, idx, ends = ctx.saved_tensors
        k, bound, inverse, min_width, min_height, min_derivative = ctx.args
        need_x, need_p = ctx.needs_input_grad[:2]
        none = (None,) * len(ctx.args)
        if torch.is_grad_enabled():  # create_graph: differentiate the whole composition
            with torch.enable_grad():
                inputs = [t for t, need in ((x, need_x), (p, need_p)) if need]
                out = _full(_spline(x, p, *ctx.args))
                grads = iter(torch.autograd.grad(out, inputs, (gy, gl), create_graph=True))
            return (next(grads) if need_x else None, next(grads) if need_p else None, *none)
        if inverse:
            with torch.enable_grad():
                xg = x.detach().requires_grad_(need_x)
                eg = ends.detach().requires_grad_(need_p)
                inputs = [t for t, need in ((xg, need_x), (eg, need_p)) if need]
                out = _full(_in_bin(xg, eg, bound, inverse))
                grads = iter(torch.autograd.grad(out, inputs, (gy, gl)))
            gx = next(grads) if need_x else None
            g_ends = next(grads) if need_p else None
        else:
            gx, g_ends = _in_bin_backward(x, ends, bound, gy, gl)
        if not need_p:
            return (gx if need_x else None, None, *none)
        assert g_ends is not None
        batch = x.shape
        # Scatter the ends' gradients to their knots; the outer knots and end derivatives are
        # constants, so only the K - 1 interior entries of each row carry gradient.
        g_table = g_ends.new_zeros((3, k + 1, *batch))
        g_table.scatter_add_(1, torch.cat([idx, idx + 1]).unsqueeze(0).expand(3, 2, *batch), g_ends)
        g_inner = g_table[:, 1:k]  # (3, K-1, *)
        raw_wh, raw_d = p.split([2 * k, k - 1])
        # Derivatives: minimum + softplus(raw + shift); softplus' = sigmoid.
        shift = math.log(math.expm1(1.0 - min_derivative))
        g_d = g_inner[2] * torch.sigmoid(raw_d + shift)
        # Knots: knot j (1 <= j < K) = 2 bound cumsum(frac)[j - 1] - bound, so the fractions'
        # gradient is 2 bound times the reversed cumulative sum of the interior knots'
        # gradients (the last fraction only moves the pinned end: no gradient).
        g_wh_frac = suffix_sums(g_inner[:2])  # (2, K, *)
        raw2 = raw_wh.reshape(2, k, *batch)
        e = torch.exp(raw2 - raw2.amax(dim=1, keepdim=True))
        sm = e.div_(e.sum(dim=1, keepdim=True))  # (2, K, *)
        # frac = minimum + (1 - minimum K) softmax; softmax backward: sm (g - <g, sm>).
        scale = [2.0 * bound * (1.0 - m * k) for m in (min_width, min_height)]
        if scale[0] == scale[1]:
            g_frac = g_wh_frac * scale[0]
        else:
            g_frac = g_wh_frac * g_wh_frac.new_tensor(scale).view(2, 1, *([1] * len(batch)))
        dot = (g_frac * sm).sum(dim=1, keepdim=True)
        g_raw = sm.mul_(g_frac.sub_(dot))
        gp = torch.cat([g_raw.reshape(2 * k, *batch), g_d])
        return (gx, gp, *none)


__all__ = ["rational_quadratic_spline", "rational_quadratic_spline_value"]
