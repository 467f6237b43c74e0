"""A masked autoregressive affine layer (ReLU MADE + affine transformer) as one autograd
node with a hand-written backward.

Autograd records ~25 nodes for a MADE of two hidden layers followed by the affine
transformer. Here the forward keeps what the backward needs (masked weights, post-ReLU
activations, ``tanh`` and ``exp`` of the log-scale) and the backward is the chain rule
written out in matrix products that write the parameter gradient straight into one flat
buffer (the MADE's parameters are one flat tensor, see :class:`flowforge.nn.MADE`).
Products whose output would have a handful of columns (the first layer's gradients) are
computed transposed, several times faster in BLAS. Values and gradients equal the
composition's (tested in float64); with ``create_graph=True`` the backward recomputes the
composition in differentiable ops, so higher derivatives are exact too.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def tanh_via_sigmoid_(u2: Tensor) -> Tensor:
    """``tanh(u)`` from ``u2 = 2 u``, as ``2 sigmoid(2 u) - 1``, overwriting ``u2``.

    The same function (to rounding: an absolute error of a few ulps of 1); torch's CPU
    ``tanh`` kernel is 4-6x slower than its ``sigmoid``, and the affine log-scale is a
    visible part of a MAF layer's time at ``D = 64``.
    """
    return u2.sigmoid_().mul_(2.0).sub_(1.0)


def _split(flat: Tensor, shapes: list[tuple[int, int]]) -> list[tuple[Tensor, Tensor]]:
    """``(weight, bias)`` views of each layer in the flat layout of :class:`~flowforge.nn.MADE`."""
    sizes = [n for o, i in shapes for n in (o * i, o)]
    pieces = flat.split(sizes)
    return [(pieces[2 * k].view(shape), pieces[2 * k + 1]) for k, shape in enumerate(shapes)]


def made_affine_reference(
    x: Tensor,
    context: Tensor | None,
    bound: float,
    rows: Tensor,
    flat: Tensor,
    shapes: list[tuple[int, int]],
    masks: list[Tensor],
) -> tuple[Tensor, Tensor]:
    """The composition :class:`MadeAffineFunction` fuses, in plain differentiable ops.

    ``flat`` holds each linear layer's ``(out, in)`` weight and bias, ``masks`` their binary
    masks, ReLU between layers; the output layer's rows ``rows`` are the raw log-scales then
    the shifts of dimensions ``0..D-1``. Returns ``(z, ladj)``, ``(N, D)`` and ``(N,)``.
    """
    layers = _split(flat, shapes)
    h = x if context is None else torch.cat([context, x], -1)
    for k, ((w, b), m) in enumerate(zip(layers, masks)):
        if k == len(layers) - 1:
            h = F.linear(h, (w * m)[rows], b[rows])
        else:
            h = torch.relu(F.linear(h, w * m, b))
    d = x.shape[-1]
    log_scale = bound * torch.tanh(h[:, :d] / bound)
    return x * torch.exp(log_scale) + h[:, d:], log_scale.sum(-1)


def _mm_t(a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
    """``a @ b``, computed as ``(b.T @ a.T).T`` when the result has few columns.

    BLAS products whose output has a handful of columns (the gradients of a MADE's first
    layer: ``D`` columns) run several times below peak; the transposed product is the same
    arithmetic with a wide output (4x faster at ``D = 8``). Without ``out`` the result may
    be a transposed view.
    """
    if b.shape[1] < a.shape[0] and b.shape[1] < 64:
        if out is None:
            return torch.mm(b.T, a.T).T
        out.copy_(torch.mm(b.T, a.T).T)
        return out
    if out is None:
        return torch.mm(a, b)
    return torch.mm(a, b, out=out)


class MadeAffineFunction(torch.autograd.Function):
    """``(z, ladj)`` of a masked autoregressive affine layer; see the module docstring.

    ``apply(x, context, bound, rows, flat, shapes, *masks)`` with ``x`` ``(N, D)``,
    ``context`` ``(N, C)`` or ``None``, ``flat`` the MADE's parameters, ``shapes`` its
    layers' ``(out, in)``.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        context: Tensor | None,
        bound: float,
        rows: Tensor,
        flat: Tensor,
        shapes: list[tuple[int, int]],
        *masks: Tensor,
    ) -> tuple[Tensor, Tensor]:
        layers = _split(flat, shapes)
        last = len(layers) - 1
        # Masked weights; the output layer's rows in (raw log-scale, shift) order, so both
        # are contiguous column blocks of the output.
        wm = [w * m for (w, _), m in zip(layers, masks)]
        wm[last] = wm[last][rows]
        h = x if context is None else torch.cat([context, x], -1)
        acts = [h]
        for k in range(last):
            h = torch.addmm(layers[k][1], h, wm[k].T).relu_()
            acts.append(h)
        out = torch.addmm(layers[last][1][rows], h, wm[last].T)  # (N, 2D)
        d = x.shape[-1]
        th = tanh_via_sigmoid_(out[:, :d] * (2.0 / bound))
        log_scale = th * bound
        scale = log_scale.exp()
        z = torch.addcmul(out[:, d:], x, scale)
        ctx.save_for_backward(x, context, rows, flat, th, scale, *masks, *wm, *acts)
        ctx.bound = bound
        ctx.shapes = shapes
        return z, log_scale.sum(-1)

    @staticmethod
    def backward(ctx: Any, grad_z: Tensor | None, grad_ladj: Tensor | None) -> tuple[Any, ...]:
        saved = ctx.saved_tensors
        x, context, rows, flat, th, scale = saved[:6]
        n = len(ctx.shapes)
        masks = saved[6 : 6 + n]
        if grad_z is None:
            grad_z = torch.zeros_like(x)
        if grad_ladj is None:
            grad_ladj = x.new_zeros(x.shape[0])
        if torch.is_grad_enabled():
            return MadeAffineFunction._differentiable_backward(ctx, grad_z, grad_ladj)
        wm = saved[6 + n : 6 + 2 * n]
        acts = saved[6 + 2 * n :]
        need_x, need_c, need_flat = (
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1],
            ctx.needs_input_grad[4],
        )
        d = x.shape[-1]
        grad_xe = grad_z * scale  # through z = x * e + t directly
        go = grad_z.new_empty(x.shape[0], 2 * d)
        ds = torch.addcmul(grad_ladj.unsqueeze(-1), grad_xe, x)  # dL/d(log-scale)
        torch.addcmul(ds, ds * th, th, value=-1.0, out=go[:, :d])  # * (1 - tanh^2)
        go[:, d:].copy_(grad_z)
        grad_flat = flat.new_empty(flat.shape) if need_flat else None
        views = _split(grad_flat, ctx.shapes) if grad_flat is not None else []
        g = go
        for k in range(n - 1, -1, -1):
            h = acts[k]
            if grad_flat is not None:
                gw, gb = views[k]
                if k == n - 1:
                    # Rows were computed in (raw, shift) order: put them back.
                    gw.index_copy_(0, rows, torch.mm(g.T, h))
                    gb.index_copy_(0, rows, g.sum(0))
                else:
                    _mm_t(g.T, h, out=gw)
                    torch.sum(g, 0, out=gb)
                gw.mul_(masks[k])
            if k > 0:
                g = torch.ops.aten.threshold_backward(_mm_t(g, wm[k]), h, 0)
            elif need_x or need_c:
                g = _mm_t(g, wm[0])  # (N, C + D)
        c = 0 if context is None else context.shape[-1]
        grad_x = grad_xe + g[:, c:] if need_x else None
        grad_c = g[:, :c] if need_c else None
        return (grad_x, grad_c, None, None, grad_flat, None) + (None,) * n

    @staticmethod
    def _differentiable_backward(ctx: Any, grad_z: Tensor, grad_ladj: Tensor) -> tuple[Any, ...]:
        # create_graph=True: recompute the composition from the saved inputs (they carry
        # their own history) and differentiate it, so higher derivatives are exact.
        saved = ctx.saved_tensors
        x, context, rows, flat = saved[:4]
        n = len(ctx.shapes)
        masks = list(saved[6 : 6 + n])
        needs = ctx.needs_input_grad
        inputs = [x, context, flat]
        flags = [needs[0], needs[1], needs[4]]
        wanted = [t for t, f in zip(inputs, flags) if f]
        with torch.enable_grad():
            z, ladj = made_affine_reference(x, context, ctx.bound, rows, flat, ctx.shapes, masks)
            got = iter(
                torch.autograd.grad(
                    (z, ladj), wanted, (grad_z, grad_ladj), create_graph=True, allow_unused=True
                )
            )
        out = [next(got) if f else None for f in flags]
        return (out[0], out[1], None, None, out[2], None) + (None,) * n


def made_affine_inference(
    x: Tensor,
    context: Tensor | None,
    bound: float,
    rows: Tensor,
    flat: Tensor,
    shapes: list[tuple[int, int]],
    masks: list[Tensor],
    chunk: int,
) -> tuple[Tensor, Tensor]:
    """``(z, ladj)`` of :func:`made_affine_reference` without autograd, for inference.

    ``rows`` is only used for ``D >= 32`` (below, the output stays in its interleaved
    order). The masked weights are formed once; rows are processed ``chunk`` at a time through
    activation buffers reused from chunk to chunk (they stay in cache), with the bias added
    by ``addmm`` and ReLU, ``tanh``, ``exp`` applied in place. Same values as the reference.
    """
    layers = _split(flat, shapes)
    last = len(layers) - 1
    n, d = x.shape
    wt = [(w * m).T for (w, _), m in zip(layers, masks)]
    biases = [b for _, b in layers]
    # Few dimensions: keep the interleaved (D, 2) output, whose stride-2 slices are one long
    # loop for the elementwise kernels; many: raw log-scales then shifts, each slice
    # contiguous along D (vectorised), like the training node.
    blocked = d >= 32
    if blocked:
        wt[last] = (layers[last][0] * masks[last])[rows].T
        biases[last] = biases[last][rows]
    z = torch.empty_like(x)
    ladj = x.new_empty(n)
    bufs = [x.new_empty(min(n, chunk), o) for o, _ in shapes]
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        xc = x[start:stop]
        h = xc if context is None else torch.cat([context[start:stop], xc], -1)
        for k in range(last + 1):
            out = bufs[k][: stop - start]
            torch.addmm(biases[k], h, wt[k], out=out)
            h = out.relu_() if k < last else out
        raw, shift = (h[:, :d], h[:, d:]) if blocked else (h[:, 0::2], h[:, 1::2])
        # bound * tanh(raw / bound), as bound * (2 sigmoid(2 raw / bound) - 1), in place.
        log_scale = raw.mul_(2.0 / bound).sigmoid_().mul_(2.0 * bound).sub_(bound)
        torch.sum(log_scale, -1, out=ladj[start:stop])
        torch.addcmul(shift, xc, log_scale.exp_(), out=z[start:stop])
    return z, ladj


__all__ = [
    "MadeAffineFunction",
    "made_affine_inference",
    "made_affine_reference",
    "tanh_via_sigmoid_",
]
