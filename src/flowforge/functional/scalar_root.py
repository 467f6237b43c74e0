"""Scalar root finding for the sampling-direction flows (planar, Sylvester), batched.

Planar and Sylvester layers map ``z`` to ``x = z + u h(w.z + b)`` (resp. a triangular
system of such terms). Inverting them reduces to scalar equations

    ``v + p h(q v + e) = t``,

one per row of the batch (planar: one; Sylvester: one per column of ``Q``, by back
substitution), with an activation ``h`` whose derivative lies in ``(0, 1]`` and ``p q > -1``.
The left side is then strictly increasing in ``v`` with slope at least
``m = 1 + min(0, p q) > 0``, so ``|v* - t| <= |p h(q t + e)| / m`` brackets the root, and a
safeguarded Newton iteration (Newton inside the bracket, bisection otherwise) finds it.

The iteration runs without gradient; :func:`solve_unit_plus_activation` then takes one Newton
step on the graph, which leaves the value unchanged (it is a root to rounding) and gives the
root the derivatives of the implicit function theorem, ``dv = -(dF) / F'(v)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Activation", "solve_increasing", "solve_unit_plus_activation"]


@dataclass(frozen=True)
class Activation:
    """An activation with derivative in ``(0, 1]``: ``tanh`` or ``leaky_relu``.

    Attributes:
        name: ``"tanh"`` or ``"leaky_relu"``.
        slope: the leaky ReLU's slope for negative inputs, in ``(0, 1]`` (unused by ``tanh``).

    Example:
        >>> import torch
        >>> h = Activation("leaky_relu", 0.5)
        >>> h(torch.tensor([-2.0, 3.0])).tolist(), h.derivative(torch.tensor([-2.0, 3.0])).tolist()
        ([-1.0, 3.0], [0.5, 1.0])
    """

    name: str = "tanh"
    slope: float = 0.2

    def __post_init__(self) -> None:
        if self.name not in ("tanh", "leaky_relu"):
            raise ValueError(f"expected activation 'tanh' or 'leaky_relu', got {self.name!r}")
        if self.name == "leaky_relu" and not 0.0 < self.slope <= 1.0:
            raise ValueError(
                f"expected a leaky_relu slope in (0, 1] (an invertible layer), got {self.slope}"
            )

    def __call__(self, a: Tensor) -> Tensor:
        """``h(a)``, elementwise."""
        if self.name == "tanh":
            return torch.tanh(a)
        return torch.where(a >= 0, a, a * self.slope)

    def derivative(self, a: Tensor) -> Tensor:
        """``h'(a)``, elementwise, in ``(0, 1]`` (the leaky ReLU's is 1 at 0)."""
        if self.name == "tanh":
            return 1.0 - torch.tanh(a).square()
        return torch.where(a >= 0, torch.ones_like(a), torch.full_like(a, self.slope))


def solve_increasing(
    fn: Callable[[Tensor], tuple[Tensor, Tensor]],
    target: Tensor,
    lo: Tensor,
    hi: Tensor,
    tol: Tensor | None = None,
    max_iter: int = 200,
) -> Tensor:
    """Solve ``fn(v) = target`` elementwise for increasing ``fn``, given a bracket.

    Safeguarded Newton: each element takes a Newton step when it lands strictly inside its
    current bracket ``[lo, hi]`` and bisects otherwise, and the bracket shrinks to the side of
    the root at every step. No gradient flows through the iteration.

    Args:
        fn: ``v -> (fn(v), fn'(v))``, elementwise, with ``fn' > 0``; shapes as ``target``.
        target: right-hand side, any shape ``(*)``.
        lo: lower ends of the brackets, shape ``(*)``, ``fn(lo) <= target``.
        hi: upper ends, shape ``(*)``, ``fn(hi) >= target``.
        tol: residual tolerance ``|fn(v) - target|``, shape ``(*)`` or broadcastable;
            default ``64 eps (1 + |target|)`` of the dtype.
        max_iter: iterations before giving up.

    Returns:
        The roots, shape ``(*)``, detached.

    Raises:
        RuntimeError: if some element has not converged after ``max_iter`` iterations.

    Example:
        >>> import torch
        >>> t = torch.tensor([0.5, 2.0], dtype=torch.float64)
        >>> v = solve_increasing(lambda v: (v**3, 3 * v**2), t, t * 0, t + 1)
        >>> torch.allclose(v**3, t)
        True
    """
    with torch.no_grad():
        target, lo, hi = target.detach(), lo.detach().clone(), hi.detach().clone()
        eps = torch.finfo(target.dtype).eps
        if tol is None:
            tol = 64 * eps * (1 + target.abs())
        v = torch.minimum(torch.maximum(target, lo), hi)
        for _ in range(max_iter):
            value, slope = fn(v)
            f = value - target
            width = hi - lo
            done = (f.abs() <= tol) | (width <= 4 * eps * (1 + v.abs()))
            if bool(done.all()):
                return v
            lo = torch.where(f < 0, v, lo)
            hi = torch.where(f > 0, v, hi)
            newton = v - f / slope
            inside = (newton > lo) & (newton < hi)
            v = torch.where(done, v, torch.where(inside, newton, (lo + hi) / 2))
        worst = float((fn(v)[0] - target).abs().max())
        raise RuntimeError(
            f"root finding did not converge in {max_iter} iterations (largest residual {worst:.3g})"
        )


def solve_unit_plus_activation(
    target: Tensor, p: Tensor, q: Tensor, e: Tensor, activation: Activation
) -> Tensor:
    """Solve ``v + p h(q v + e) = target`` for ``v``, elementwise, with ``p q > -1``.

    The root is found by :func:`solve_increasing` without gradient, then one Newton step on
    the graph gives it the implicit-function derivatives in ``target``, ``p``, ``q`` and ``e``.

    Args:
        target: right-hand side ``t``, shape ``(*)``.
        p: scale of the activation term, broadcastable to ``(*)``.
        q: slope inside the activation, broadcastable to ``(*)``, with ``p q > -1``.
        e: offset inside the activation, broadcastable to ``(*)``.
        activation: ``h``, with derivative in ``(0, 1]``.

    Returns:
        ``v``, shape of the broadcast inputs.

    Example:
        >>> import torch
        >>> h = Activation("tanh")
        >>> t, p = torch.tensor([0.3, -2.0]), torch.tensor([-0.9, 1.5])
        >>> v = solve_unit_plus_activation(t, p, torch.tensor(1.0), torch.tensor(0.0), h)
        >>> torch.allclose(v + p * torch.tanh(v), t)
        True
    """
    target, p, q, e = torch.broadcast_tensors(target, p, q, e)
    pq = (p * q).detach()
    floor = 1.0 + pq.clamp(max=0.0)  # the smallest slope of the left side, > 0

    def fn(v: Tensor) -> tuple[Tensor, Tensor]:
        a = q.detach() * v + e.detach()
        return v + p.detach() * activation(a), 1.0 + pq * activation.derivative(a)

    with torch.no_grad():
        t = target.detach()
        eps = torch.finfo(t.dtype).eps
        reach = (p.detach() * activation(q.detach() * t + e.detach())).abs() / floor
        reach = reach * (1 + 1e-6) + 16 * eps * (1 + t.abs())
    root = solve_increasing(fn, t, t - reach, t + reach)
    a = q * root + e
    residual = root + p * activation(a) - target
    return root - residual / (1.0 + pq * activation.derivative(a.detach()))
