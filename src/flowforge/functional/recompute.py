"""Exact higher derivatives of a fused autograd node: differentiate the recomputed composition.

A fused node's written-out backward runs in untracked ops. When the caller asks for
``create_graph=True`` (the backward is itself to be differentiated), the node instead
recomputes its plain differentiable composition from the saved inputs (they carry their own
history) and differentiates that, so every higher derivative is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def recomputed_grads(
    compute: Callable[[], Sequence[Tensor]],
    grad_outputs: Sequence[Tensor | None],
    inputs: Sequence[Tensor | None],
    needs: Sequence[bool],
) -> list[Tensor | None]:
    """Gradients of ``compute()`` with ``create_graph=True``, for the inputs that need them.

    Args:
        compute: recomputes the node's outputs from ``inputs`` in differentiable ops.
        grad_outputs: the gradient of each output (``None``: that output is unused).
        inputs: the node's tensor inputs (``None`` for an absent optional one).
        needs: whether each input wants a gradient (``ctx.needs_input_grad``).

    Returns:
        One entry per input: its gradient, or ``None`` where not needed.
    """
    wanted = [t for t, need in zip(inputs, needs) if need and t is not None]
    with torch.enable_grad():
        outputs = compute()
        pairs = [
            (o, g) for o, g in zip(outputs, grad_outputs) if g is not None and o.requires_grad
        ]  # an additive chain's ladj is a constant: no gradient flows from it
        got = iter(
            torch.autograd.grad(
                [o for o, _ in pairs],
                wanted,
                [g for _, g in pairs],
                create_graph=True,
                allow_unused=True,
            )
        )
    return [next(got) if need and t is not None else None for t, need in zip(inputs, needs)]


__all__ = ["recomputed_grads"]
