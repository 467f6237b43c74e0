"""The flat parameter layout of a stack of linear layers.

:class:`~flowforge.nn.MLP` and :class:`~flowforge.nn.MADE` keep all their weights and biases
in one flat parameter, layer by layer: the ``(out, in)`` weight row-major, then the ``(out,)``
bias. One tensor instead of ``2L`` makes the per-parameter loops of ``torch.optim`` ``2L``
times cheaper, and the fused kernels write each layer's gradient straight into one flat
buffer. This module is the one place that knows the layout: the networks, the kernels and
their gradient buffers all split a flat vector with :func:`split_layers`.

Example:
    >>> w0, b0, w1, b1 = torch.ones(4, 3), torch.zeros(4), torch.ones(2, 4), torch.zeros(2)
    >>> flat = join_layers([(w0, b0), (w1, b1)])
    >>> flat.shape, layer_sizes([(4, 3), (2, 4)])
    (torch.Size([26]), [12, 4, 8, 2])
    >>> [tuple(w.shape) for w, b in split_layers(flat, [(4, 3), (2, 4)])]
    [(4, 3), (2, 4)]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

Shapes = Sequence[tuple[int, int]]


def layer_sizes(shapes: Shapes) -> list[int]:
    """Sizes of the flat pieces, ``[out_0 * in_0, out_0, out_1 * in_1, out_1, ...]``.

    Args:
        shapes: ``(out, in)`` of each linear layer, in order.
    """
    return [n for o, i in shapes for n in (o * i, o)]


def split_layers(
    flat: Tensor, shapes: Shapes, sizes: Sequence[int] | None = None
) -> list[tuple[Tensor, Tensor]]:
    """``(weight, bias)`` of each layer, views of ``flat``: weight ``(out, in)``, bias ``(out,)``.

    Args:
        flat: the flat vector, shape ``(sum(layer_sizes(shapes)),)``: parameters, or a
            gradient buffer to write each layer's gradient into.
        shapes: ``(out, in)`` of each linear layer, in order.
        sizes: ``layer_sizes(shapes)``, when the caller has it at hand.
    """
    pieces = flat.split(layer_sizes(shapes) if sizes is None else sizes)
    return [(pieces[2 * k].view(shape), pieces[2 * k + 1]) for k, shape in enumerate(shapes)]


def join_layers(layers: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
    """The flat vector of ``(weight, bias)`` layers: the inverse of :func:`split_layers`."""
    return torch.cat([t for w, b in layers for t in (w.flatten(), b)])


__all__ = ["Shapes", "join_layers", "layer_sizes", "split_layers"]
