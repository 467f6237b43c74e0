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

Without gradients, :func:`made_affine_inference` (the density direction, one pass) and
:func:`made_affine_inverse_inference` (the ``D``-pass direction: MAF sampling, IAF density)
form the masked weights once per call and work through cache-sized row chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    """One layer of the composition :class:`MadeAffineChain` fuses, in plain differentiable ops.

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


def _mm_t(a: Tensor, b: Tensor, out: Tensor | None = None, narrow: int = 64) -> Tensor:
    """``a @ b``, computed as ``(b.T @ a.T).T`` when the result has few columns.

    BLAS products whose output has a handful of columns (the gradients of a MADE's first
    layer: ``D`` columns) run several times below peak; the transposed product is the same
    arithmetic with a wide output (4x faster at ``D = 8``). "Few" is fewer than ``narrow``.
    Without ``out`` the result may be a transposed view.
    """
    if b.shape[1] < a.shape[0] and b.shape[1] < narrow:
        if out is None:
            return torch.mm(b.T, a.T).T
        out.copy_(torch.mm(b.T, a.T).T)
        return out
    if out is None:
        return torch.mm(a, b)
    return torch.mm(a, b, out=out)


class AffineLayerSpec:
    """The constants a fused masked autoregressive affine layer needs, prepared once.

    Built from a :class:`~flowforge.nn.MADE` (ReLU hidden layers, two outputs per dimension)
    and the affine transformer's ``bound``; ``views`` are ``(weight, bias)`` views of the
    MADE's ``flat`` parameter (they follow its in-place updates). The output layer runs
    in ``layout``: interleaved ``(D, 2)`` rows below 32 dimensions (a stride-2 slice is one
    long loop for the elementwise kernels), raw log-scales then shifts above (unit-stride
    slices, vectorised). Its mask is pre-multiplied by ``2 / bound`` on the raw log-scale
    rows, so the layer outputs ``u = 2 raw / bound`` directly and
    ``log_scale = bound (2 sigmoid(u) - 1) = bound tanh(raw / bound)``; the gradient of
    the raw weights is then the gradient of ``u``'s weights times that same mask.
    """

    __slots__ = (
        "bound",
        "context",
        "features",
        "flat_ptr",
        "grad_scale",
        "ls_scale",
        "made_masks",
        "masks",
        "needed",
        "out_scale",
        "param_rows",
        "rows",
        "shapes",
        "sizes",
        "unit_order",
        "views",
    )

    def __init__(self, made: Any, bound: float) -> None:
        d = made.features
        flat = made.flat.detach()
        self.shapes = list(made.shapes)
        self.sizes = list(made._sizes)
        self.flat_ptr = flat.data_ptr()
        self.views = self.split(flat)
        self.bound = float(bound)
        self.features = d
        self.context = made.context
        masks = list(made.masks())
        self.made_masks = list(masks)
        self.param_rows = made.param_major_rows
        scale = torch.ones(2 * d, dtype=flat.dtype, device=flat.device)
        scale[0::2] = 2.0 / bound
        out_mask = masks[-1] * scale[:, None]
        # What the gradients of u's weights and biases are multiplied by, in flat's
        # order: the masks (the output layer's scaled) and the output biases' scale.
        grad_scale = [
            t for m in [*masks[:-1], out_mask] for t in (m.flatten(), torch.ones_like(m[:, 0]))
        ]
        grad_scale[-1] = scale.clone()
        self.grad_scale = torch.cat(grad_scale)
        self.ls_scale = (flat.new_tensor(2.0 * bound), flat.new_tensor(float(bound)))
        self.rows: Tensor | None = None
        if d >= 32:
            self.rows = made.param_major_rows
            out_mask, scale = out_mask[self.rows], scale[self.rows]
        masks[-1] = out_mask
        self.masks = masks
        self.out_scale = scale
        self._plan_inverse(made)

    def _plan_inverse(self, made: Any) -> None:
        """:meth:`flowforge.nn.MADE.unit_plan`: hidden units sorted by effective degree
        (``unit_order``) and the prefix of each layer dimension ``i`` needs (``needed[i]``)."""
        orders, self.needed = made.unit_plan()
        self.unit_order = [o.to(self.out_scale.device) for o in orders]

    def split(self, flat: Tensor) -> list[tuple[Tensor, Tensor]]:
        """``(weight, bias)`` views of each layer of a flat parameter vector."""
        pieces = flat.split(self.sizes)
        return [(pieces[2 * k].view(s), pieces[2 * k + 1]) for k, s in enumerate(self.shapes)]


def _chain_forward(
    x: Tensor, context: Tensor | None, specs: list[Any], flats: Sequence[Tensor]
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """The chain's forward: ``(z, ladj, saved)``, ``saved`` what :func:`_chain_backward` reads
    (per layer: input, network input, hidden activations, log-scale, scale, masked weights)."""
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
            b = b_out * s.out_scale
        else:
            wm.append(w_out.index_select(0, s.rows).mul_(s.masks[-1]))
            b = b_out.index_select(0, s.rows).mul_(s.out_scale)
        h = x if context is None else torch.cat([context, x], -1)
        saved += [x, h]
        for k in range(n_layers - 1):
            h = torch.addmm(views[k][1], h, wm[k].T).relu_()
            saved.append(h)
        out = torch.addmm(b, h, wm[-1].T)  # (N, 2D): u = 2 raw / bound, and shifts
        d = s.features
        if s.rows is None:
            u, shift = out[:, 0::2], out[:, 1::2]
        else:
            u, shift = out[:, :d], out[:, d:]
        # bound (2 sigmoid(u) - 1), in a buffer of its own (saving a view of ``out``
        # would keep the shifts alive too); 0-dim tensors (Python floats get wrapped).
        log_scale = torch.sigmoid(u).mul_(s.ls_scale[0]).sub_(s.ls_scale[1])
        scale = log_scale.exp()
        x = torch.addcmul(shift, x, scale)
        ladj = log_scale.sum(-1)
        total = ladj if total is None else total.add_(ladj)
        saved += [log_scale, scale, *wm]
    assert total is not None
    return x, total, saved


def _chain_backward(
    specs: list[Any],
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
    # Unpack the saved intermediates layer by layer.
    layers = []
    pos = 0
    for s in specs:
        n_layers = len(s.shapes)
        x, *acts = saved[pos : pos + 1 + n_layers]
        pos += 1 + n_layers
        log_scale, scale = saved[pos], saved[pos + 1]
        wm = saved[pos + 2 : pos + 2 + n_layers]
        pos += 2 + n_layers
        layers.append((x, acts, log_scale, scale, wm))
    grad_flats: list[Tensor | None] = [None] * len(specs)
    grad_c: Tensor | None = None
    gl = grad_ladj.unsqueeze(-1)
    for i in range(len(specs) - 1, -1, -1):
        s = specs[i]
        x, acts, log_scale, scale, wm = layers[i]
        d, bound, c = s.features, s.bound, s.context
        n_layers = len(s.shapes)
        grad_xe = grad_z * scale  # through z = x * scale + shift directly
        # dL/du = dL/dlog_scale * (bound / 2) * (1 - (log_scale / bound)^2)
        ds = torch.addcmul(gl * (0.5 * bound), grad_xe, x, value=0.5 * bound)
        go = x.new_empty(x.shape[0], 2 * d)
        if s.rows is None:
            go_u, go_shift = go[:, 0::2], go[:, 1::2]
        else:
            go_u, go_shift = go[:, :d], go[:, d:]
        torch.addcmul(ds, ds * log_scale, log_scale, value=-1.0 / (bound * bound), out=go_u)
        go_shift.copy_(grad_z)
        grad_flat = None
        if need_flats[i]:
            grad_flat = x.new_empty(sum(s.sizes))
            pieces = grad_flat.split(s.sizes)
        deeper = i > 0 or need_x or (c > 0 and need_c)
        g = go
        for k in range(n_layers - 1, -1, -1):
            h = acts[k]
            if grad_flat is not None:
                gw, gb = pieces[2 * k].view(s.shapes[k]), pieces[2 * k + 1]
                if k == n_layers - 1 and s.rows is not None:
                    # Rows were computed in (raw, shift) order: put them back.
                    gw.index_copy_(0, s.rows, torch.mm(g.T, h))
                    gb.index_copy_(0, s.rows, g.sum(0))
                else:
                    _mm_t(g.T, h, out=gw)
                    torch.sum(g, 0, out=gb)
            if k > 0:
                g = torch.mm(g, wm[k])
                torch.ops.aten.threshold_backward.grad_input(g, h, 0, grad_input=g)
            elif deeper:
                g = _mm_t(g, wm[0])  # (N, C + D)
        if grad_flat is not None:
            grad_flat.mul_(s.grad_scale)  # masks, and the u rows' 2 / bound
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
        # create_graph=True: recompute the composition from the saved inputs (they carry
        # their own history) and differentiate it, so higher derivatives are exact.
        specs: list[AffineLayerSpec] = ctx.specs
        saved = ctx.saved_tensors
        context = saved[0]
        flats = saved[1 : 1 + len(specs)]
        x = saved[1 + len(specs)]
        needs = ctx.needs_input_grad
        inputs = [x, context, *flats]
        flags = [needs[0], needs[1], *needs[3:]]
        wanted = [t for t, f in zip(inputs, flags) if f]
        with torch.enable_grad():
            z, total = x, x.new_zeros(x.shape[0])
            for s, flat in zip(specs, flats):
                z, ladj = made_affine_reference_spec(z, context, s, flat)
                total = total + ladj
            outs, grads = [], []
            for o, g in ((z, grad_z), (total, grad_ladj)):
                if g is not None:
                    outs.append(o)
                    grads.append(g)
            got = iter(
                torch.autograd.grad(outs, wanted, grads, create_graph=True, allow_unused=True)
            )
        out = [next(got) if f else None for f in flags]
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


def made_affine_inverse_inference(
    z: Tensor,
    context: Tensor | None,
    spec: AffineLayerSpec,
    flat: Tensor,
    order: list[int],
    chunk: int,
) -> tuple[Tensor, Tensor]:
    """``(x, ladj)`` of the inverse of a masked autoregressive affine layer, without autograd.

    The ``D``-pass inversion (sampling a MAF, the density of an IAF): pass ``k`` runs the
    MADE on the current ``x`` and fixes dimension ``order[k]`` (increasing degree), whose
    parameters depend only on dimensions fixed before. The masked weights and each
    dimension's two output rows are formed once per call, not per pass; ``x`` is updated in
    place in an input buffer that also holds the context (no concatenation per pass); each
    pass computes only the hidden units its dimension depends on (a prefix of each layer
    once the units are sorted by degree, see :meth:`AffineLayerSpec._plan_inverse`); rows
    are processed ``chunk`` at a time through reused activation buffers. Same values as
    the module path, which runs ~25 small operations per pass over the whole network.
    """
    views = spec.views if flat.data_ptr() == spec.flat_ptr else spec.split(flat)
    n, d = z.shape
    c = spec.context
    # Masked weights with the hidden units sorted by effective degree (rows, and the next
    # layer's columns), transposed for addmm.
    wt, biases = [], []
    prev = None
    for (w, b), m, perm in zip(views[:-1], spec.masks[:-1], spec.unit_order):
        wm = (w * m)[perm]
        wt.append((wm if prev is None else wm[:, prev]).T)
        biases.append(b[perm])
        prev = perm
    w_out, b_out = views[-1]
    if spec.rows is None:
        w_f, b_f = w_out * spec.masks[-1], b_out * spec.out_scale
        pick = [(2 * i, 2 * i + 1) for i in range(d)]
    else:
        w_f = w_out.index_select(0, spec.rows).mul_(spec.masks[-1])
        b_f = b_out.index_select(0, spec.rows).mul_(spec.out_scale)
        pick = [(i, d + i) for i in range(d)]
    if prev is not None:
        w_f = w_f[:, prev]
    # Dimension i's (u, shift) rows: (D, H, 2) and (D, 2).
    index = torch.tensor(pick, device=z.device)
    w_dim = w_f[index].transpose(1, 2)
    b_dim = b_f[index]
    x = torch.empty_like(z)
    ladj = z.new_empty(n)
    rows = min(n, chunk)
    inp = z.new_empty(rows, c + d)
    bufs = [z.new_empty(rows * w.shape[1]) for w in wt]
    out = z.new_empty(rows, 2)
    lsum = z.new_empty(rows)
    two_bound, bound = spec.ls_scale
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        m = stop - start
        h_in = inp[:m]
        if c:
            assert context is not None
            h_in[:, :c].copy_(context[start:stop])
        xc = h_in[:, c:]
        xc.zero_()
        zc = z[start:stop]
        ls_acc = lsum[:m].zero_()
        for i in order:
            h, width = h_in, c + d
            for k, units in enumerate(spec.needed[i]):
                # Only the first `units` units (by effective degree) of this layer.
                h_out = bufs[k][: m * units].view(m, units)
                h = torch.addmm(biases[k][:units], h, wt[k][:width, :units], out=h_out).relu_()
                width = units
            o = torch.addmm(b_dim[i], h, w_dim[i][:width], out=out[:m])
            log_scale = o[:, 0].sigmoid_().mul_(two_bound).sub_(bound)
            ls_acc.add_(log_scale)
            # x_i = (z_i - shift_i) * exp(-log_scale_i), written into the input buffer.
            torch.mul(zc[:, i] - o[:, 1], log_scale.neg_().exp_(), out=xc[:, i])
        x[start:stop].copy_(xc)
        torch.neg(ls_acc, out=ladj[start:stop])
    return x, ladj


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
    "AffineLayerSpec",
    "MadeAffineChain",
    "made_affine_chain",
    "made_affine_inference",
    "made_affine_inverse_inference",
    "made_affine_reference",
    "made_affine_reference_spec",
    "tanh_via_sigmoid_",
]
