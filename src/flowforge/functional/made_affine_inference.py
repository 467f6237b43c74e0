"""Masked autoregressive affine layers without gradients: the density direction in one pass
(:func:`made_affine_inference`) and the ``D``-pass direction (:func:`made_affine_inverse_inference`:
MAF sampling, IAF density).

Both form the masked weights once per call and work through cache-sized row chunks; the
layer's layout is an :class:`~flowforge.functional.made_affine.AffineLayerSpec`. With gradients,
:class:`~flowforge.functional.made_affine.MadeAffineChain` runs a chain of the same layers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowforge.functional.affine import bounded_log_scale
from flowforge.functional.flat import split_layers
from flowforge.functional.made_affine import AffineLayerSpec


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
    for (w, b), mask, perm in zip(views[:-1], spec.masks[:-1], spec.unit_order):
        wm = (w * mask)[perm]
        wt.append((wm if prev is None else wm[:, prev]).T)
        biases.append(b[perm])
        prev = perm
    w_out, b_out = views[-1]
    if spec.rows is None:
        w_f, b_f = w_out * spec.masks[-1], b_out
        pick = [(2 * i, 2 * i + 1) for i in range(d)]
    else:
        w_f = w_out.index_select(0, spec.rows).mul_(spec.masks[-1])
        b_f = b_out.index_select(0, spec.rows)
        pick = [(i, d + i) for i in range(d)]
    if prev is not None:
        w_f = w_f[:, prev]
    # Dimension i's (raw log-scale, shift) rows: (D, H, 2) and (D, 2).
    index = torch.tensor(pick, device=z.device)
    w_dim = w_f[index].transpose(1, 2)
    b_dim = b_f[index]
    # Each pass's weight and bias slices (only the units its dimension needs), sliced once
    # per call: a pass works on (chunk, units) blocks, where each view costs as much as a
    # small op.
    plans = []
    for i in order:
        hidden, width = [], c + d
        for k, units in enumerate(spec.needed[i]):
            hidden.append((units, biases[k][:units], wt[k][:width, :units]))
            width = units
        plans.append((i, hidden, b_dim[i], w_dim[i][:width]))
    x = torch.empty_like(z)
    ladj = z.new_empty(n)
    rows = min(n, chunk)
    inp = z.new_empty(rows, c + d)
    bufs = [z.new_empty(rows * w.shape[1]) for w in wt]
    out = z.new_empty(rows, 2)
    log_scales = z.new_empty(rows, d)  # each pass writes its dimension's column
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        m = stop - start
        h_in = inp[:m]
        if c:
            assert context is not None
            h_in[:, :c].copy_(context[start:stop])
        xc = h_in[:, c:]
        xc.zero_()
        ls = log_scales[:m]
        o = out[:m]
        raw, shift = o.unbind(1)
        z_cols, x_cols, ls_cols = z[start:stop].unbind(1), xc.unbind(1), ls.unbind(1)
        for i, hidden, b_i, w_i in plans:
            h = h_in
            for k, (units, b_k, w_k) in enumerate(hidden):
                # Only the first `units` units (by effective degree) of this layer.
                h = torch.addmm(b_k, h, w_k, out=bufs[k][: m * units].view(m, units)).relu_()
            torch.addmm(b_i, h, w_i, out=o)
            log_scale = bounded_log_scale(raw, spec.bound, out=ls_cols[i])
            # x_i = (z_i - shift_i) / exp(log_scale_i), written into the input buffer.
            torch.div(z_cols[i] - shift, log_scale.exp(), out=x_cols[i])
        x[start:stop].copy_(xc)
        torch.sum(ls, -1, out=ladj[start:stop]).neg_()
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
    by ``addmm`` and ReLU, the bounded log-scale, ``exp`` applied in place. Same values as the reference.
    """
    layers = split_layers(flat, shapes)
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
        log_scale = bounded_log_scale(raw, bound, out=raw)  # in place
        torch.sum(log_scale, -1, out=ladj[start:stop])
        torch.addcmul(shift, xc, log_scale.exp_(), out=z[start:stop])
    return z, ladj


__all__ = ["made_affine_inference", "made_affine_inverse_inference"]
