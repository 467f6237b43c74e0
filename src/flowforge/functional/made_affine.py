"""Masked autoregressive affine layers (ReLU MADE + affine transformer): a chain of them as
one autograd node with a hand-written backward, and kernels for inference without gradients.

Autograd records ~25 nodes per layer for a MADE of two hidden layers followed by the affine
transformer, and ~120 us of bookkeeping per node. :class:`MadeAffineChain` runs a whole chain
of such layers (a MAF) as one node: the forward keeps what the backward needs (masked
weights, post-ReLU activations, log-scale and scale) and the backward is the chain rule
written out in matrix products that write each layer's parameter gradient straight into one
flat buffer (the MADE's parameters are one flat tensor, see :class:`flowforge.nn.MADE`).
Products whose output would have a handful of columns (the first layer's gradients) are
computed transposed, several times faster in BLAS. Values and gradients equal the
composition's (tested in float64); with ``create_graph=True`` the backward recomputes the
composition in differentiable ops, so higher derivatives are exact too.

Without gradients, :mod:`flowforge.functional.made_affine_inference` runs the same layers in
both directions (the density in one pass, sampling in ``D`` passes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from flowforge.functional.affine import bounded_log_scale, bounded_log_scale_backward
from flowforge.functional.flat import join_layers, layer_sizes, split_layers
from flowforge.functional.matmul import mm_narrow
from flowforge.functional.recompute import recomputed_grads


class MadeLike(Protocol):
    """What :class:`AffineLayerSpec` reads of a MADE (:class:`~flowforge.nn.MADE` is one).

    Kernels know no modules: this names the attributes, it imports nothing.
    """

    @property
    def features(self) -> int: ...

    @property
    def context(self) -> int: ...

    @property
    def flat(self) -> Tensor: ...

    @property
    def shapes(self) -> list[tuple[int, int]]: ...

    @property
    def param_major_rows(self) -> Tensor: ...

    def masks(self) -> list[Tensor]: ...

    def unit_plan(self) -> tuple[list[Tensor], list[tuple[int, ...]]]: ...


def made_affine_reference(
    x: Tensor,
    context: Tensor | None,
    bound: float,
    rows: Tensor,
    flat: Tensor,
    shapes: list[tuple[int, int]],
    masks: list[Tensor],
) -> tuple[Tensor, Tensor]:
    """One layer of the composition :class:`MadeAffineChain` fuses, in plain differentiable ops.

    ``flat`` holds each linear layer's ``(out, in)`` weight and bias, ``masks`` their binary
    masks, ReLU between layers; the output layer's rows ``rows`` are the raw log-scales then
    the shifts of dimensions ``0..D-1``. Returns ``(z, ladj)``, ``(N, D)`` and ``(N,)``.
    """
    layers = split_layers(flat, shapes)
    h = x if context is None else torch.cat([context, x], -1)
    for k, ((w, b), m) in enumerate(zip(layers, masks)):
        if k == len(layers) - 1:
            h = F.linear(h, (w * m)[rows], b[rows])
        else:
            h = torch.relu(F.linear(h, w * m, b))
    d = x.shape[-1]
    log_scale = bounded_log_scale(h[:, :d], bound)
    return x * torch.exp(log_scale) + h[:, d:], log_scale.sum(-1)


class AffineLayerSpec:
    """The constants a fused masked autoregressive affine layer needs, prepared once.

    Built from a MADE (:class:`MadeLike`: ReLU hidden layers, two outputs per dimension)
    and the affine transformer's ``bound``; ``views`` are ``(weight, bias)`` views of the
    MADE's ``flat`` parameter (they follow its in-place updates). The output layer runs
    in ``layout``: interleaved ``(D, 2)`` rows below 32 dimensions (a stride-2 slice is one
    long loop for the elementwise kernels), raw log-scales then shifts above (unit-stride
    slices, vectorised): ``rows`` is then the output rows in that order (``None``: as
    stored), and ``masks[-1]`` the output mask in that order.
    """

    __slots__ = (
        "bound",
        "context",
        "features",
        "flat_ptr",
        "grad_scale",
        "made_masks",
        "masks",
        "needed",
        "param_rows",
        "rows",
        "shapes",
        "sizes",
        "unit_order",
        "views",
    )

    def __init__(self, made: MadeLike, bound: float) -> None:
        d = made.features
        flat = made.flat.detach()
        self.shapes = list(made.shapes)
        self.sizes = layer_sizes(self.shapes)
        self.flat_ptr = flat.data_ptr()
        self.views = self.split(flat)
        self.bound = float(bound)
        self.features = d
        self.context = made.context
        masks = list(made.masks())
        self.made_masks = list(masks)
        self.param_rows = made.param_major_rows
        # What the gradients of the masked weights are multiplied by, in flat's order: the
        # masks (biases: 1).
        self.grad_scale = join_layers([(m, torch.ones_like(m[:, 0])) for m in masks])
        self.rows: Tensor | None = None
        if d >= 32:
            self.rows = made.param_major_rows
            masks[-1] = masks[-1][self.rows]
        self.masks = masks
        self._plan_inverse(made)

    def _plan_inverse(self, made: MadeLike) -> None:
        """:meth:`flowforge.nn.MADE.unit_plan`: hidden units sorted by effective degree
        (``unit_order``) and the prefix of each layer dimension ``i`` needs (``needed[i]``)."""
        orders, self.needed = made.unit_plan()
        self.unit_order = [o.to(self.grad_scale.device) for o in orders]

    def split(self, flat: Tensor) -> list[tuple[Tensor, Tensor]]:
        """``(weight, bias)`` views of each layer of a flat parameter vector."""
        return split_layers(flat, self.shapes, self.sizes)


class _Saved(NamedTuple):
    """What the backward reads of one layer of the chain (saved flat, in this order)."""

    x: Tensor  # the layer's input, (N, D)
    acts: list[Tensor]  # the input of each linear layer: network input, post-ReLU activations
    log_scale: Tensor  # s = bounded_log_scale(raw), (N, D)
    scale: Tensor  # exp(s), (N, D)
    wm: list[Tensor]  # masked weights of each linear layer (the output layer's in layout)

    def tensors(self) -> list[Tensor]:
        return [self.x, *self.acts, self.log_scale, self.scale, *self.wm]

    @staticmethod
    def unpack(specs: list[AffineLayerSpec], tensors: Sequence[Tensor]) -> list[_Saved]:
        """The inverse of ``tensors()`` over the layers ``specs``."""
        out = []
        pos = 0
        for s in specs:
            n = len(s.shapes)
            x, acts = tensors[pos], list(tensors[pos + 1 : pos + 1 + n])
            log_scale, scale = tensors[pos + 1 + n], tensors[pos + 2 + n]
            wm = list(tensors[pos + 3 + n : pos + 3 + 2 * n])
            out.append(_Saved(x, acts, log_scale, scale, wm))
            pos += 3 + 2 * n
        return out


def _chain_forward(
    x: Tensor, context: Tensor | None, specs: list[AffineLayerSpec], flats: Sequence[Tensor]
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """The chain's forward: ``(z, ladj, saved)``, ``saved`` what :func:`_chain_backward` reads
    (each layer's :class:`_Saved`, flattened)."""
    saved: list[Tensor] = []
    total: Tensor | None = None
    for s, flat in zip(specs, flats):
        n_layers = len(s.shapes)
        # The cached views, unless called with other parameters than the spec's.
        views = s.views if flat.data_ptr() == s.flat_ptr else s.split(flat)
        wm = [w * m for (w, _), m in zip(views[:-1], s.masks[:-1])]
        w_out, b_out = views[-1]
        if s.rows is None:
            wm.append(w_out * s.masks[-1])
            b = b_out
        else:
            wm.append(w_out.index_select(0, s.rows).mul_(s.masks[-1]))
            b = b_out.index_select(0, s.rows)
        h = x if context is None else torch.cat([context, x], -1)
        acts = [h]
        for k in range(n_layers - 1):
            h = torch.addmm(views[k][1], h, wm[k].T).relu_()
            acts.append(h)
        out = torch.addmm(b, h, wm[-1].T)  # (N, 2D): raw log-scales and shifts
        d = s.features
        if s.rows is None:
            raw, shift = out[:, 0::2], out[:, 1::2]
        else:
            raw, shift = out[:, :d], out[:, d:]
        # In a buffer of its own (saving a view of ``out`` would keep the shifts alive too).
        log_scale = bounded_log_scale(raw, s.bound, out=raw.new_empty(raw.shape))
        scale = log_scale.exp()
        saved += _Saved(x, acts, log_scale, scale, wm).tensors()
        x = torch.addcmul(shift, x, scale)
        ladj = log_scale.sum(-1)
        total = ladj if total is None else total.add_(ladj)
    assert total is not None
    return x, total, saved


def _chain_backward(
    specs: list[AffineLayerSpec],
    saved: Sequence[Tensor],
    grad_z: Tensor | None,
    grad_ladj: Tensor | None,
    need_x: bool,
    need_c: bool,
    need_flats: list[bool],
) -> tuple[Tensor | None, Tensor | None, list[Tensor | None]]:
    """The chain's backward written out: gradients of ``x``, the context and each ``flat``."""
    x0 = saved[0]
    if grad_z is None:
        grad_z = torch.zeros_like(x0)
    if grad_ladj is None:
        grad_ladj = x0.new_zeros(x0.shape[0])
    layers = _Saved.unpack(specs, saved)
    grad_flats: list[Tensor | None] = [None] * len(specs)
    grad_c: Tensor | None = None
    gl = grad_ladj.unsqueeze(-1)
    for i in range(len(specs) - 1, -1, -1):
        s = specs[i]
        x, acts, log_scale, scale, wm = layers[i]
        d, bound, c = s.features, s.bound, s.context
        n_layers = len(s.shapes)
        grad_xe = grad_z * scale  # through z = x * scale + shift directly
        ds = torch.addcmul(gl, grad_xe, x)  # dL/dlog_scale
        go = x.new_empty(x.shape[0], 2 * d)
        if s.rows is None:
            go_raw, go_shift = go[:, 0::2], go[:, 1::2]
        else:
            go_raw, go_shift = go[:, :d], go[:, d:]
        bounded_log_scale_backward(ds, log_scale, bound, out=go_raw)
        go_shift.copy_(grad_z)
        grad_flat = None
        if need_flats[i]:
            grad_flat = x.new_empty(sum(s.sizes))
            grad_layers = s.split(grad_flat)
        deeper = i > 0 or need_x or (c > 0 and need_c)
        g = go
        for k in range(n_layers - 1, -1, -1):
            h = acts[k]
            if grad_flat is not None:
                gw, gb = grad_layers[k]
                if k == n_layers - 1 and s.rows is not None:
                    # Rows were computed in (raw, shift) order: put them back.
                    gw.index_copy_(0, s.rows, torch.mm(g.T, h))
                    gb.index_copy_(0, s.rows, g.sum(0))
                else:
                    mm_narrow(g.T, h, out=gw)
                    torch.sum(g, 0, out=gb)
            if k > 0:
                g = torch.mm(g, wm[k])
                torch.ops.aten.threshold_backward.grad_input(g, h, 0, grad_input=g)
            elif deeper:
                g = mm_narrow(g, wm[0])  # (N, C + D)
        if grad_flat is not None:
            grad_flat.mul_(s.grad_scale)  # the masks
        grad_flats[i] = grad_flat
        if deeper:
            grad_z = grad_xe.add_(g[:, c:] if c else g)
            if c and need_c:
                grad_c = g[:, :c] if grad_c is None else grad_c + g[:, :c]
    return (grad_z if need_x else None), grad_c, grad_flats


class MadeAffineChain(torch.autograd.Function):
    """``(z, ladj)`` of a chain of masked autoregressive affine layers as one autograd node.

    ``apply(x, context, specs, *flats)``: ``x`` ``(N, D)``, ``context`` ``(N, C)`` or
    ``None``, ``specs`` one :class:`AffineLayerSpec` per layer (applied in order) and
    ``flats`` their MADEs' parameters. ``ladj`` is the sum over the layers. One layer is the
    fused layer of :class:`~flowforge.transforms.MaskedAutoregressive`; a whole MAF is one
    chain (``Compose`` hands it over), which saves the autograd bookkeeping of one node per
    layer and the sum of their log-determinants.
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, context: Tensor | None, specs: list[AffineLayerSpec], *flats: Tensor
    ) -> tuple[Tensor, Tensor]:
        z, total, saved = _chain_forward(x, context, specs, flats)
        ctx.save_for_backward(context, *flats, *saved)
        ctx.specs = specs
        return z, total

    @staticmethod
    def backward(ctx: Any, grad_z: Tensor | None, grad_ladj: Tensor | None) -> tuple[Any, ...]:
        specs: list[AffineLayerSpec] = ctx.specs
        if torch.is_grad_enabled():
            return MadeAffineChain._differentiable_backward(ctx, grad_z, grad_ladj)
        saved = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_x, grad_c, grad_flats = _chain_backward(
            specs,
            saved[1 + len(specs) :],
            grad_z,
            grad_ladj,
            needs[0],
            needs[1],
            list(needs[3:]),
        )
        return (grad_x, grad_c, None, *grad_flats)

    @staticmethod
    def _differentiable_backward(
        ctx: Any, grad_z: Tensor | None, grad_ladj: Tensor | None
    ) -> tuple[Any, ...]:
        # create_graph=True: differentiate the recomputed composition (exact higher
        # derivatives).
        specs: list[AffineLayerSpec] = ctx.specs
        saved = ctx.saved_tensors
        context = saved[0]
        flats = saved[1 : 1 + len(specs)]
        x = saved[1 + len(specs)]
        needs = ctx.needs_input_grad

        def composition() -> tuple[Tensor, Tensor]:
            z, total = x, x.new_zeros(x.shape[0])
            for s, flat in zip(specs, flats):
                z, ladj = made_affine_reference_spec(z, context, s, flat)
                total = total + ladj
            return z, total

        out = recomputed_grads(
            composition, (grad_z, grad_ladj), [x, context, *flats], [needs[0], needs[1], *needs[3:]]
        )
        return (out[0], out[1], None, *out[2:])


def made_affine_reference_spec(
    x: Tensor, context: Tensor | None, spec: AffineLayerSpec, flat: Tensor
) -> tuple[Tensor, Tensor]:
    """:func:`made_affine_reference` of the layer ``spec`` describes, with parameters ``flat``."""
    return made_affine_reference(
        x, context, spec.bound, spec.param_rows, flat, spec.shapes, spec.made_masks
    )


def made_affine_chain(
    x: Tensor, context: Tensor | None, specs: list[AffineLayerSpec], flats: list[Tensor]
) -> tuple[Tensor, Tensor]:
    """``(z, ladj)`` of the layers ``specs`` (parameters ``flats``) applied in order, fused."""
    z, ladj = MadeAffineChain.apply(x, context, specs, *flats)
    return z, ladj


__all__ = [
    "AffineLayerSpec",
    "MadeAffineChain",
    "made_affine_chain",
    "made_affine_reference",
    "made_affine_reference_spec",
]
