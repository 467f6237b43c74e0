"""When a fused kernel may run in place of the plain module path.

A fused kernel (an autograd node with a written-out backward, a no-grad inference kernel) is an
optimisation, never a semantics: the plain composition of modules is always there and gives the
same numbers. This module is the one place that decides whether the eager kernels may run:

- not while ``torch.compile`` traces (inductor fuses the plain composition by itself),
- not under ``torch.func`` transforms (``vmap``, ``jacrev``, ``grad``: the kernels' written-out
  backwards are not functorch-aware),
- not inside :func:`plain_modules`, the switch that tests and users take to run exactly the
  modules they wrote (a reference that takes a different code path from the kernels).

Example:
    >>> import torch, flowforge as ff
    >>> flow = ff.flows.RealNVP(features=4, transforms=2, hidden=(8,))
    >>> x = torch.randn(3, 4)
    >>> with ff.functional.plain_modules():
    ...     assert not ff.functional.eager_kernels_allowed()
    ...     reference = flow.log_prob(x)
    >>> torch.allclose(flow.log_prob(x), reference, atol=1e-6)
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

_PLAIN: ContextVar[bool] = ContextVar("flowforge_plain_modules", default=False)


def eager_kernels_allowed() -> bool:
    """Whether eager fused kernels may run now (see the module docstring)."""
    if torch.compiler.is_compiling():  # first: dynamo folds it, and traces nothing after
        return False
    return not (torch._C._are_functorch_transforms_active() or _PLAIN.get())


@contextmanager
def plain_modules() -> Iterator[None]:
    """Within this block every bijection runs its plain module path: no fused kernel.

    Nests, and is local to the thread (and asyncio task) that enters it.
    """
    token = _PLAIN.set(True)
    try:
        yield
    finally:
        _PLAIN.reset(token)


__all__ = ["eager_kernels_allowed", "plain_modules"]
