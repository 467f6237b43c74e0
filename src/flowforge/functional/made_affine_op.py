"""The fused chain of masked autoregressive affine layers as a ``torch.library`` custom op.

Under ``torch.compile`` an ``autograd.Function`` is traced into the graph, and the chain's
hand-written kernels (products into non-contiguous ``out=`` views, in-place updates) are not
traceable: the compiled graph would break. As a custom op with a registered autograd
formula (a second custom op for the backward), the chain is one opaque node of the compiled
graph, forward and backward: the compiled training step runs the same kernels as eager
training, with the rest of the step (base density, loss) compiled around them.

Metadata travels as integers: ``meta = [K, then per layer: D, C, L, blocked, then the L
layers' (out, in)]``; ``bounds`` per layer. Tensors per layer: the MADE's flat parameter,
its ``L`` masks (the output one scaled by ``2 / bound`` on the ``u`` rows and in the layer's
output layout), the output scale, the gradient multiplier and the row order (empty when
interleaved); see :class:`~flowforge.functional.made_affine.AffineLayerSpec`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from flowforge.functional.made_affine import _chain_backward, _chain_forward


class _TensorSpec:
    """An :class:`~flowforge.functional.made_affine.AffineLayerSpec` rebuilt from op inputs."""

    def __init__(
        self,
        flat: Tensor,
        masks: list[Tensor],
        out_scale: Tensor,
        grad_scale: Tensor,
        rows: Tensor,
        dims: list[int],
        bound: float,
    ) -> None:
        d, c, n_layers, blocked = dims[:4]
        self.features, self.context, self.bound = d, c, bound
        self.shapes = [(dims[4 + 2 * k], dims[5 + 2 * k]) for k in range(n_layers)]
        self.sizes = [n for o, i in self.shapes for n in (o * i, o)]
        self.masks, self.out_scale, self.grad_scale = masks, out_scale, grad_scale
        self.rows = rows if blocked else None
        self.flat_ptr = -1  # always split the given parameters
        self.ls_scale = (flat.new_tensor(2.0 * bound), flat.new_tensor(bound))
        self.views: list[tuple[Tensor, Tensor]] = []

    def split(self, flat: Tensor) -> list[tuple[Tensor, Tensor]]:
        pieces = flat.split(self.sizes)
        return [(pieces[2 * k].view(s), pieces[2 * k + 1]) for k, s in enumerate(self.shapes)]


def _specs(
    flats: list[Tensor],
    masks: list[Tensor],
    out_scales: list[Tensor],
    grad_scales: list[Tensor],
    rows: list[Tensor],
    meta: list[int],
    bounds: list[float],
) -> list[_TensorSpec]:
    specs, pos, m = [], 1, 0
    for i in range(meta[0]):
        n_layers = meta[pos + 2]
        dims = meta[pos : pos + 4 + 2 * n_layers]
        pos += 4 + 2 * n_layers
        spec = _TensorSpec(
            flats[i],
            masks[m : m + n_layers],
            out_scales[i],
            grad_scales[i],
            rows[i],
            dims,
            bounds[i],
        )
        m += n_layers
        specs.append(spec)
    return specs


def _strip(saved: list[Tensor], specs: list[_TensorSpec], context: bool) -> list[Tensor]:
    """``saved`` without the tensors that alias the op's input (custom ops may not return
    aliases): layer 0's input, and each layer's network input when it is its input."""
    out, pos = [], 0
    for i, s in enumerate(specs):
        n = 2 + (len(s.shapes) - 1) + 2 + len(s.shapes)
        x, h, rest = saved[pos], saved[pos + 1], saved[pos + 2 : pos + n]
        if i > 0:
            out.append(x)
        if context:
            out.append(h)
        out += rest
        pos += n
    return out


def _unstrip(
    stripped: list[Tensor], x: Tensor, specs: list[_TensorSpec], context: bool
) -> list[Tensor]:
    """The inverse of :func:`_strip`, given the op's input ``x``."""
    out, pos = [], 0
    for i, s in enumerate(specs):
        xi = x if i == 0 else stripped[pos]
        pos += i > 0
        h = stripped[pos] if context else xi
        pos += context
        n = (len(s.shapes) - 1) + 2 + len(s.shapes)
        out += [xi, h, *stripped[pos : pos + n]]
        pos += n
    return out


_FWD_SCHEMA = (
    "(Tensor x, Tensor? context, Tensor[] flats, Tensor[] masks, Tensor[] out_scales, "
    "Tensor[] grad_scales, Tensor[] rows, int[] meta, float[] bounds) -> Tensor[]"
)
_BWD_SCHEMA = (
    "(Tensor grad_z, Tensor grad_ladj, Tensor x, Tensor? context, Tensor[] flats, "
    "Tensor[] saved, Tensor[] masks, Tensor[] out_scales, Tensor[] grad_scales, "
    "Tensor[] rows, int[] meta, float[] bounds, bool[] needs) -> Tensor[]"
)


@torch.library.custom_op("flowforge::made_affine_chain", mutates_args=(), schema=_FWD_SCHEMA)
def made_affine_chain_op(
    x: Tensor,
    context: Tensor | None,
    flats: list[Tensor],
    masks: list[Tensor],
    out_scales: list[Tensor],
    grad_scales: list[Tensor],
    rows: list[Tensor],
    meta: list[int],
    bounds: list[float],
) -> list[Tensor]:
    """``[z, ladj, *saved]`` of the chain (``saved`` without aliases of ``x``)."""
    specs = _specs(flats, masks, out_scales, grad_scales, rows, meta, bounds)
    z, total, saved = _chain_forward(x, context, specs, flats)
    return [z, total, *_strip(saved, specs, context is not None)]


@made_affine_chain_op.register_fake
def _(
    x: Tensor,
    context: Tensor | None,
    flats: list[Tensor],
    masks: list[Tensor],
    out_scales: list[Tensor],
    grad_scales: list[Tensor],
    rows: list[Tensor],
    meta: list[int],
    bounds: list[float],
) -> list[Tensor]:
    specs = _specs(flats, masks, out_scales, grad_scales, rows, meta, bounds)
    n, d = x.shape
    out = [x.new_empty(n, d), x.new_empty(n)]
    for i, s in enumerate(specs):
        if i > 0:
            out.append(x.new_empty(n, d))
        if context is not None:
            out.append(x.new_empty(n, context.shape[1] + d))
        out += [x.new_empty(n, o) for o, _ in s.shapes[:-1]]
        out += [x.new_empty(n, d), x.new_empty(n, d)]
        out += [x.new_empty(o, i_) for o, i_ in s.shapes]
    return out


@torch.library.custom_op(
    "flowforge::made_affine_chain_backward", mutates_args=(), schema=_BWD_SCHEMA
)
def made_affine_chain_backward_op(
    grad_z: Tensor,
    grad_ladj: Tensor,
    x: Tensor,
    context: Tensor | None,
    flats: list[Tensor],
    saved: list[Tensor],
    masks: list[Tensor],
    out_scales: list[Tensor],
    grad_scales: list[Tensor],
    rows: list[Tensor],
    meta: list[int],
    bounds: list[float],
    needs: list[bool],
) -> list[Tensor]:
    """``[grad_x, grad_context, *grad_flats]``; an empty tensor where a gradient is not needed."""
    specs = _specs(flats, masks, out_scales, grad_scales, rows, meta, bounds)
    full = _unstrip(saved, x, specs, context is not None)
    grad_x, grad_c, grad_flats = _chain_backward(
        specs, full, grad_z, grad_ladj, needs[0], needs[1], [True] * len(specs)
    )
    empty = x.new_empty(0)
    out = [empty if grad_x is None else grad_x]
    out.append(empty.clone() if grad_c is None else grad_c.contiguous())
    out += [g if g is not None else empty.clone() for g in grad_flats]
    return out


@made_affine_chain_backward_op.register_fake
def _(
    grad_z: Tensor,
    grad_ladj: Tensor,
    x: Tensor,
    context: Tensor | None,
    flats: list[Tensor],
    saved: list[Tensor],
    masks: list[Tensor],
    out_scales: list[Tensor],
    grad_scales: list[Tensor],
    rows: list[Tensor],
    meta: list[int],
    bounds: list[float],
    needs: list[bool],
) -> list[Tensor]:
    out = [x.new_empty(x.shape) if needs[0] else x.new_empty(0)]
    if context is not None and needs[1]:
        out.append(context.new_empty(context.shape))
    else:
        out.append(x.new_empty(0))
    out += [f.new_empty(f.shape) for f in flats]
    return out


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: list[Tensor]) -> None:
    x, context, flats, masks, out_scales, grad_scales, rows, meta, bounds = inputs
    ctx.counts = (len(flats), len(output) - 2, len(masks), len(rows))
    ctx.n_inputs = len(inputs)
    ctx.has_context = context is not None
    ctx.meta, ctx.bounds = meta, bounds
    ctx.save_for_backward(
        x,
        context,
        *flats,
        *output[2:],
        *masks,
        *out_scales,
        *grad_scales,
        *rows,
    )


def _backward(ctx: Any, grads: list[Tensor | None]) -> tuple[Any, ...]:
    k, n_saved, n_masks, n_rows = ctx.counts
    t = ctx.saved_tensors
    x, context = t[0], t[1]
    pos = 2
    flats = list(t[pos : pos + k])
    pos += k
    saved = list(t[pos : pos + n_saved])
    pos += n_saved
    masks = list(t[pos : pos + n_masks])
    pos += n_masks
    out_scales = list(t[pos : pos + k])
    pos += k
    grad_scales = list(t[pos : pos + k])
    pos += k
    rows = list(t[pos : pos + n_rows])
    grad_z = grads[0] if grads[0] is not None else torch.zeros_like(x)
    grad_ladj = grads[1] if grads[1] is not None else x.new_zeros(x.shape[0])
    need_x, need_c = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    res = made_affine_chain_backward_op(
        grad_z,
        grad_ladj,
        x,
        context,
        flats,
        saved,
        masks,
        out_scales,
        grad_scales,
        rows,
        ctx.meta,
        ctx.bounds,
        [bool(need_x), bool(need_c and ctx.has_context)],
    )
    grad_x = res[0] if need_x else None
    grad_c = res[1] if need_c and ctx.has_context else None
    # The inputs' structure: tensor lists as lists, other arguments as single entries.
    grads_in: list[Any] = [
        grad_x,
        grad_c,
        list(res[2:]),
        [None] * n_masks,
        [None] * k,
        [None] * k,
        [None] * n_rows,
    ]
    return tuple(grads_in + [None] * (ctx.n_inputs - len(grads_in)))


torch.library.register_autograd(
    "flowforge::made_affine_chain", _backward, setup_context=_setup_context
)


__all__ = ["made_affine_chain_backward_op", "made_affine_chain_op"]
