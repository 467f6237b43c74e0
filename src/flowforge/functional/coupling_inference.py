"""Coupling layers (ReLU MLP conditioner, affine or additive transformer) without autograd.

The inference counterpart of a coupling layer's module path, for ``log_prob`` and sampling:
the MLP's weights are sliced out of its flat parameter once per call, rows go through the
network ``chunk`` at a time in activation buffers reused from chunk to chunk (they stay in
cache), and the transformer's elementwise work runs in place, written straight into the
output. Same values as the module path (tested in float64).
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowforge.functional.affine import bounded_log_scale


def coupling_inference(
    x: Tensor,
    context: Tensor | None,
    split: int,
    layers: list[tuple[Tensor, Tensor]],
    affine_bound: float | None,
    inverse: bool,
    chunk: int,
) -> tuple[Tensor, Tensor]:
    """``(y, ladj)`` of a coupling layer whose identity part is ``x[:, :split]``.

    Args:
        x: ``(N, D)`` input (data for the forward map, latent for ``inverse``).
        context: ``(N, C)`` or ``None``; concatenated after the identity part.
        split: size of the identity (conditioning) part, a prefix of the dimensions.
        layers: ``(weight, bias)`` of each linear layer, ReLU between them; the last
            outputs ``(D - split, P)`` interleaved, ``P = 2`` (raw log-scale, shift) for
            the affine transformer, ``P = 1`` (shift) for the additive one.
        affine_bound: the affine transformer's log-scale bound, ``None`` for additive.
        inverse: apply the inverse map.
        chunk: rows per chunk.
    """
    n = x.shape[0]
    nb = x.shape[1] - split
    layers = list(layers)
    # Many dimensions: reorder the output layer's rows to (raw log-scales, shifts), so each
    # is a slice contiguous along D (vectorised); few: keep the interleaved order, whose
    # stride-2 slices are one long loop for the elementwise kernels.
    blocked = affine_bound is not None and nb >= 32
    if blocked:
        rows = torch.arange(2 * nb, device=x.device).view(nb, 2).T.flatten()
        w, b = layers[-1]
        layers[-1] = (w[rows], b[rows])
    wt = [w.T for w, _ in layers]
    y = torch.empty_like(x)
    y[:, :split] = x[:, :split]
    ladj = x.new_zeros(n)
    bufs = [x.new_empty(min(n, chunk), w.shape[0]) for w, _ in layers]
    last = len(layers) - 1
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        a = x[start:stop, :split]
        h = a if context is None else torch.cat([a, context[start:stop]], -1)
        for k, (_, b) in enumerate(layers):
            out = bufs[k][: stop - start]
            torch.addmm(b, h, wt[k], out=out)
            h = out.relu_() if k < last else out
        xb = x[start:stop, split:]
        yb = y[start:stop, split:]
        if affine_bound is None:
            torch.sub(xb, h, out=yb) if inverse else torch.add(xb, h, out=yb)
            continue
        if blocked:
            raw, shift = h[:, :nb], h[:, nb:]
        else:
            raw, shift = h[:, 0 : 2 * nb : 2], h[:, 1 : 2 * nb : 2]
        log_scale = bounded_log_scale(raw, affine_bound, out=raw)  # in place
        torch.sum(log_scale, -1, out=ladj[start:stop])
        if inverse:
            ladj[start:stop].neg_()
            torch.mul(torch.sub(xb, shift, out=yb), log_scale.neg_().exp_(), out=yb)
        else:
            torch.addcmul(shift, xb, log_scale.exp_(), out=yb)
    return y, ladj


__all__ = ["coupling_inference"]
