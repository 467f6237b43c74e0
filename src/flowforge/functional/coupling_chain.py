"""A chain of coupling layers (and the permutations between them) as one autograd node.

A RealNVP or NICE layer run through autograd records ~15 nodes (slices, three linear
layers, two ReLUs, the transformer's ops, the join, the permutation after it), each with
its bookkeeping, in the forward and again in the backward. :class:`CouplingChain` runs a
whole run of such layers as one node: the forward keeps what the backward needs (each
layer's input, the post-ReLU activations, the transformer's log-scale and scale), and the
backward is the chain rule written out in matrix products that write each layer's
parameter gradient straight into one flat buffer (an :class:`~flowforge.nn.MLP`'s
parameters are one flat tensor). Values and gradients equal the composition's (tested in
float64); with ``create_graph=True`` the backward recomputes the composition in
differentiable ops, so higher derivatives are exact too.

Layers are described by :class:`CouplingStep` (a coupling layer: identity part a prefix of
``split`` dimensions, ReLU MLP conditioner, affine or additive transformer) or a
permutation (an index tensor).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from flowforge.functional.affine import bounded_log_scale, bounded_log_scale_backward
from flowforge.functional.flat import layer_sizes, split_layers
from flowforge.functional.matmul import mm_narrow
from flowforge.functional.recompute import recomputed_grads


@dataclass(frozen=True)
class CouplingStep:
    """A coupling layer as the fused chain sees it.

    Attributes:
        split: size of the identity (conditioning) part, a prefix of the dimensions.
        context: size of the context concatenated after it (0: none).
        shapes: ``(out, in)`` of each linear layer of the ReLU MLP, in its flat layout
            (weight row-major, then bias, layer by layer).
        bound: the affine transformer's log-scale bound; ``None`` for the additive one.
            The MLP's output is ``(D - split, P)`` interleaved: (raw log-scale, shift)
            pairs for the affine transformer, shifts for the additive one.
    """

    split: int
    context: int
    shapes: tuple[tuple[int, int], ...]
    bound: float | None

    @cached_property
    def sizes(self) -> list[int]:
        """Sizes of the pieces of the flat parameter (:func:`~flowforge.functional.flat.layer_sizes`)."""
        return layer_sizes(self.shapes)

    def layers(self, flat: Tensor) -> list[tuple[Tensor, Tensor]]:
        """``(weight, bias)`` views of ``flat`` (parameters or a gradient buffer)."""
        return split_layers(flat, self.shapes, self.sizes)


# Products with fewer output columns than this run transposed (see ``mm_narrow``); from 16
# on, the direct product is as fast, and its output needs no strided copy after.
NARROW = 16


class _Saved(NamedTuple):
    """What the backward reads of one coupling layer (saved flat, in this order)."""

    x: Tensor  # the layer's input, (N, D)
    acts: list[Tensor]  # post-ReLU activations of each hidden layer, (N, H_k)
    log_scale: Tensor | None  # affine: s = bounded_log_scale(raw), (N, D - split)
    scale: Tensor | None  # affine: exp(s), (N, D - split)

    def tensors(self) -> list[Tensor]:
        extra = [] if self.log_scale is None or self.scale is None else [self.log_scale, self.scale]
        return [self.x, *self.acts, *extra]

    @staticmethod
    def unpack(steps: list[CouplingStep], tensors: list[Tensor]) -> list[_Saved]:
        """The inverse of ``tensors()`` over the coupling layers ``steps``."""
        out = []
        pos = 0
        for step in steps:
            n_hidden = len(step.shapes) - 1
            x, acts = tensors[pos], tensors[pos + 1 : pos + 1 + n_hidden]
            pos += 1 + n_hidden
            if step.bound is None:
                out.append(_Saved(x, acts, None, None))
            else:
                out.append(_Saved(x, acts, tensors[pos], tensors[pos + 1]))
                pos += 2
        return out


# A step of the chain: a coupling layer (with its flat parameter) or a permutation, given as
# (perm, inverse perm) index tensors.
Step = CouplingStep | tuple[Tensor, Tensor]


def coupling_reference(
    x: Tensor, context: Tensor | None, step: CouplingStep, flat: Tensor
) -> tuple[Tensor, Tensor]:
    """One coupling layer of the chain in plain differentiable ops: ``(z, ladj)``."""
    s = step.split
    a, xb = x[:, :s], x[:, s:]
    h = a if context is None else torch.cat([a, context], -1)
    layers = step.layers(flat)
    for k, (w, b) in enumerate(layers):
        h = F.linear(h, w, b)
        if k < len(layers) - 1:
            h = torch.relu(h)
    if step.bound is None:
        return torch.cat([a, xb + h], -1), x.new_zeros(x.shape[0])
    raw, shift = h[:, 0::2], h[:, 1::2]
    log_scale = bounded_log_scale(raw, step.bound)
    return torch.cat([a, xb * torch.exp(log_scale) + shift], -1), log_scale.sum(-1)


def _chain_forward(
    x: Tensor, context: Tensor | None, steps: list[Step], flats: list[Tensor]
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Values of the chain and the intermediates its backward needs."""
    total = x.new_zeros(x.shape[0])
    saved: list[Tensor] = []
    flat_iter = iter(flats)
    for step in steps:
        if not isinstance(step, CouplingStep):
            x = x.index_select(1, step[0])
            continue
        flat = next(flat_iter)
        s = step.split
        a, xb = x[:, :s], x[:, s:]
        h = a if context is None else torch.cat([a, context], -1)
        layers = step.layers(flat)
        last = len(layers) - 1
        acts = []
        for k, (w, b) in enumerate(layers):
            h = torch.addmm(b, h, w.T)
            if k < last:
                h = h.relu_()
                acts.append(h)
        z = torch.empty_like(x)
        z[:, :s] = a
        if step.bound is None:
            torch.add(xb, h, out=z[:, s:])
            saved += _Saved(x, acts, None, None).tensors()
        else:
            raw, shift = h[:, 0::2], h[:, 1::2]
            # In a buffer of its own (a view of h would keep the shifts alive too).
            log_scale = bounded_log_scale(raw, step.bound, out=raw.new_empty(raw.shape))
            scale = torch.exp(log_scale)
            torch.addcmul(shift, xb, scale, out=z[:, s:])
            total.add_(log_scale.sum(-1))
            saved += _Saved(x, acts, log_scale, scale).tensors()
        x = z
    return x, total, saved


def _chain_backward(
    steps: list[Step],
    flats: list[Tensor],
    context: Tensor | None,
    saved: list[Tensor],
    grad_z: Tensor | None,
    grad_ladj: Tensor | None,
    need_x: bool,
    need_c: bool,
    need_flats: list[bool],
) -> tuple[Tensor | None, Tensor | None, list[Tensor | None]]:
    """The chain's backward written out: gradients of ``x``, the context and each ``flat``."""
    couplings = [s for s in steps if isinstance(s, CouplingStep)]
    per_layer = _Saved.unpack(couplings, saved)
    x0 = saved[0]
    n, d = x0.shape
    g = grad_z if grad_z is not None else x0.new_zeros(n, d)
    gl = None if grad_ladj is None else grad_ladj.unsqueeze(-1)
    grad_flats: list[Tensor | None] = [None] * len(couplings)
    grad_c: Tensor | None = None
    li = len(couplings)
    # The first coupling needs no input gradient unless x or the context wants one.
    first = next(i for i, s in enumerate(steps) if isinstance(s, CouplingStep))
    for si in range(len(steps) - 1, -1, -1):
        any_step = steps[si]
        if not isinstance(any_step, CouplingStep):
            g = g.index_select(1, any_step[1])
            continue
        step = any_step
        li -= 1
        x, acts, log_scale, scale = per_layer[li]
        flat = flats[li]
        s, c = step.split, step.context
        g_b = g[:, s:]
        if step.bound is None or log_scale is None or scale is None:
            go = g_b
            g_xb = g_b
        else:
            g_xb = g_b * scale
            # dL/dlog_scale = dL/dz x e + dL/dladj, then through the bound's derivative.
            ds = g_xb * x[:, s:]
            if gl is not None:
                ds.add_(gl)
            go = x.new_empty(n, 2 * (d - s))
            bounded_log_scale_backward(ds, log_scale, step.bound, out=go[:, 0::2])
            go[:, 1::2] = g_b
        deeper = si > first or need_x or (c > 0 and need_c)
        layers = step.layers(flat)
        grad_flat = None
        if need_flats[li]:
            grad_flat = x.new_empty(sum(step.sizes))
            grad_layers = step.layers(grad_flat)
        h_in = x[:, :s] if c == 0 else torch.cat([x[:, :s], context], -1)  # type: ignore[list-item]
        gh = go
        for k in range(len(layers) - 1, -1, -1):
            h = acts[k - 1] if k > 0 else h_in
            if grad_flat is not None:
                gw, gb = grad_layers[k]
                mm_narrow(gh.T, h, out=gw, narrow=NARROW)
                torch.sum(gh, 0, out=gb)
            if k > 0:
                gh = torch.mm(gh, layers[k][0])
                torch.ops.aten.threshold_backward.grad_input(gh, h, 0, grad_input=gh)
            elif deeper:
                gh = mm_narrow(gh, layers[0][0], narrow=NARROW)  # (N, split + C)
        grad_flats[li] = grad_flat
        if not deeper:
            g = None  # type: ignore[assignment]
            break
        g_x = torch.empty_like(x)
        torch.add(g[:, :s], gh[:, :s], out=g_x[:, :s])
        g_x[:, s:] = g_xb
        if c and need_c:
            grad_c = gh[:, s:] if grad_c is None else grad_c + gh[:, s:]
        g = g_x
    return (g if need_x else None), grad_c, grad_flats


class CouplingChain(torch.autograd.Function):
    """``(z, ladj)`` of a run of coupling layers and permutations as one autograd node.

    ``apply(x, context, steps, *flats)``: ``x`` ``(N, D)``, ``context`` ``(N, C)`` or
    ``None``, ``steps`` the layers in order (:class:`CouplingStep` or a permutation's
    ``(perm, inverse perm)``) and ``flats`` the coupling layers' MLP parameters, in order.
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, context: Tensor | None, steps: list[Step], *flats: Tensor
    ) -> tuple[Tensor, Tensor]:
        z, total, saved = _chain_forward(x, context, steps, list(flats))
        ctx.save_for_backward(context, x, *flats, *saved)
        ctx.steps = steps
        return z, total

    @staticmethod
    def backward(ctx: Any, grad_z: Tensor | None, grad_ladj: Tensor | None) -> tuple[Any, ...]:
        steps: list[Step] = ctx.steps
        n_flat = sum(isinstance(s, CouplingStep) for s in steps)
        saved = ctx.saved_tensors
        context, x = saved[0], saved[1]
        flats, rest = list(saved[2 : 2 + n_flat]), list(saved[2 + n_flat :])
        needs = ctx.needs_input_grad
        if torch.is_grad_enabled():
            return CouplingChain._differentiable_backward(
                steps, context, flats, x, grad_z, grad_ladj, needs
            )
        grad_x, grad_c, grad_flats = _chain_backward(
            steps, flats, context, rest, grad_z, grad_ladj, needs[0], needs[1], list(needs[3:])
        )
        return (grad_x, grad_c, None, *grad_flats)

    @staticmethod
    def _differentiable_backward(
        steps: list[Step],
        context: Tensor | None,
        flats: list[Tensor],
        x: Tensor,
        grad_z: Tensor | None,
        grad_ladj: Tensor | None,
        needs: tuple[bool, ...],
    ) -> tuple[Any, ...]:
        # create_graph=True: differentiate the recomputed composition (exact higher
        # derivatives).
        def composition() -> tuple[Tensor, Tensor]:
            z, total = x, x.new_zeros(x.shape[0])
            flat_iter = iter(flats)
            for step in steps:
                if isinstance(step, CouplingStep):
                    z, ladj = coupling_reference(z, context, step, next(flat_iter))
                    total = total + ladj
                else:
                    z = z.index_select(1, step[0])
            return z, total

        out = recomputed_grads(
            composition, (grad_z, grad_ladj), [x, context, *flats], [needs[0], needs[1], *needs[3:]]
        )
        return (out[0], out[1], None, *out[2:])


def coupling_chain(
    x: Tensor, context: Tensor | None, steps: list[Step], flats: list[Tensor]
) -> tuple[Tensor, Tensor]:
    """``(z, ladj)`` of ``steps`` (coupling layers with parameters ``flats``) in order, fused."""
    z, ladj = CouplingChain.apply(x, context, steps, *flats)
    return z, ladj


__all__ = ["CouplingChain", "CouplingStep", "coupling_chain", "coupling_reference"]
