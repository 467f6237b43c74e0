"""Row-wise bijections evaluated on cache-sized chunks of a large batch.

A conditioner layer maps each row independently, so a batch can be split into chunks of rows
with exactly the same result; chunks whose activations fit in the CPU caches are several times
faster than one pass that streams every intermediate through memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from flowforge.core.bijection import Bijection, batch_shape_of

# Floats in the widest intermediate of one row chunk (1 MiB in float32): a chunk's
# activations then stay in the CPU caches, where whole large batches stream through memory.
ROW_BUDGET = 1 << 18
# At most this many row chunks under torch.compile (each is a copy of the graph).
COMPILED_CHUNKS = 8


def widest(module: nn.Module, default: int) -> int:
    """The widest output of the linear layers in ``module`` (``default`` if it has none).

    Counts ``nn.Linear`` submodules and the ``layer_widths`` modules declare (MADE).
    """
    widths = [default]
    for m in module.modules():
        if isinstance(m, nn.Linear):
            widths.append(m.out_features)
        widths += getattr(m, "layer_widths", ())
    return max(widths)


def _row_chunks(
    x: Tensor, context: Tensor | None, width: int
) -> list[tuple[Tensor, Tensor | None]] | None:
    """The row chunks of ``(x, context)`` for :func:`by_row_chunks`, or ``None``: left whole."""
    rows = max(256, ROW_BUDGET // max(width, 1))
    n = x.shape[0] if x.dim() == 2 else 0
    if torch.compiler.is_compiling():
        if torch.is_grad_enabled():
            return None
        # Compiled inference: inductor fuses the elementwise work, but the network's
        # outputs still stream through memory on large batches. A few large chunks (the
        # loop is unrolled into the graph) keep them in cache.
        rows = max(rows, math.ceil(n / COMPILED_CHUNKS))
    if n <= 2 * rows or (context is not None and (context.dim() != 2 or context.shape[0] != n)):
        return None
    contexts = [None] * math.ceil(n / rows) if context is None else context.split(rows)
    return list(zip(x.split(rows), contexts))


def by_row_chunks(
    fn: Callable[[Tensor, Tensor | None], tuple[Tensor, Tensor]],
    x: Tensor,
    context: Tensor | None,
    width: int,
) -> tuple[Tensor, Tensor]:
    """``fn(x, context)`` of a row-wise map, evaluated on chunks of the rows of ``x`` ``(N, D)``.

    Exact (each row is computed alone either way), and several times faster on large
    batches. Left whole when small, not a matrix, or under ``torch.compile``.
    """
    chunks = _row_chunks(x, context, width)
    if chunks is None:
        return fn(x, context)
    ys, ladjs = zip(*(fn(xc, cc) for xc, cc in chunks))
    return torch.cat(ys), torch.cat(ladjs)


def value_by_row_chunks(
    fn: Callable[[Tensor, Tensor | None], Tensor],
    x: Tensor,
    context: Tensor | None,
    width: int,
) -> Tensor:
    """:func:`by_row_chunks` of a value-only row-wise map (``fn`` returns ``(N, D)`` alone)."""
    chunks = _row_chunks(x, context, width)
    if chunks is None:
        return fn(x, context)
    return torch.cat([fn(xc, cc) for xc, cc in chunks])


class RowwiseBijection(Bijection):
    """A bijection that maps each row of a ``(N, D)`` batch independently.

    Subclasses implement ``_forward`` and ``_inverse`` and set ``_width`` (the widest
    intermediate per row); ``forward`` and ``inverse`` check the shape and evaluate them on
    row chunks of large batches.
    """

    _width: int = 1

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(
            f"{type(self).__name__} has no forward (data -> latent) direction"
        )

    def _inverse(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(
            f"{type(self).__name__} has no inverse (latent -> data) direction"
        )

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch_shape_of(x, self.event_shape)
        return by_row_chunks(self._forward, x, context, self._width)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch_shape_of(z, self.event_shape)
        return by_row_chunks(self._inverse, z, context, self._width)


__all__ = ["ROW_BUDGET", "RowwiseBijection", "by_row_chunks", "value_by_row_chunks", "widest"]
