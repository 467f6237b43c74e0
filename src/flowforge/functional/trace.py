"""Trace estimators of a velocity's Jacobian, the log-density rate of a continuous flow.

A continuous flow ``dz/dt = f(z, t)`` changes the log-density at the rate
``-tr(df/dz)``; its RNODE regulariser needs ``||df/dz||_F^2``. Both come from the
Jacobian ``J = df/dz``, either whole (exact) or through one random product ``J e`` with
``E[e e^T] = I`` (Hutchinson: ``E[e^T J e] = tr J`` and ``E[||J e||^2] = ||J||_F^2``).

The formulas are one function each (:func:`exact_trace` and :func:`hutchinson_trace` take
``J`` or ``J e``); where ``J`` or ``J e`` comes from is a separate matter: here by autograd
(:func:`jacobian_autograd`, :func:`jvp_autograd`, for any network), or by the dynamics
network's own forward-mode pass (:meth:`flowforge.nn.ODENet.forward_and_jvp`). The noise of
a solve is drawn once by :func:`trace_noise` and held fixed through it.

References:
    Hutchinson (1989). A stochastic estimator of the trace of the influence matrix for
    Laplacian smoothing splines. Communications in Statistics - Simulation and Computation.

    Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud (2019). FFJORD: Free-form Continuous
    Dynamics for Scalable Reversible Generative Models. arXiv:1810.01367.

Example:
    >>> import torch
    >>> a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    >>> z = torch.randn(3, 2, requires_grad=True)
    >>> jac = jacobian_autograd(z @ a.T, z, create_graph=False)  # (3, 2, 2): a for each row
    >>> exact_trace(jac).trace.tolist(), exact_trace(jac).frobenius.tolist()
    ([5.0, 5.0, 5.0], [30.0, 30.0, 30.0])
    >>> e = torch.tensor([[1.0, 1.0]]).expand(3, 2)
    >>> hutchinson_trace(e, jvp_autograd(z @ a.T, z, e, create_graph=False)).trace.tolist()
    [10.0, 10.0, 10.0]
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

Noise = Literal["gaussian", "rademacher"]


class TraceEstimate(NamedTuple):
    """The trace of ``J = df/dz`` and its squared Frobenius norm, per row.

    Attributes:
        trace: ``(N,)`` ``tr J`` (or its estimate).
        frobenius: ``(N,)`` ``||J||_F^2`` (or its estimate).
    """

    trace: Tensor
    frobenius: Tensor


def exact_trace(jacobian: Tensor) -> TraceEstimate:
    """``tr J`` and ``||J||_F^2`` of whole Jacobians.

    Args:
        jacobian: ``(N, D, D)``, ``jacobian[n, i, j] = d f_i / d z_j`` of row ``n`` (or its
            transpose: both quantities are the same).

    Returns:
        Both ``(N,)``.
    """
    trace = jacobian.diagonal(dim1=-2, dim2=-1).sum(-1)
    return TraceEstimate(trace, jacobian.square().sum((-2, -1)))


def hutchinson_trace(noise: Tensor, jvp: Tensor) -> TraceEstimate:
    """Hutchinson's estimates ``e^T J e`` of ``tr J`` and ``||J e||^2`` of ``||J||_F^2``.

    Unbiased when ``E[e e^T] = I`` (:func:`trace_noise`).

    Args:
        noise: ``(N, D)`` probe vectors ``e``.
        jvp: ``(N, D)`` products ``J e``.

    Returns:
        Both ``(N,)``.
    """
    return TraceEstimate((noise * jvp).sum(-1), jvp.square().sum(-1))


def trace_noise(like: Tensor, kind: Noise = "rademacher") -> Tensor:
    """Probe vectors with ``E[e e^T] = I``: standard normal or random signs.

    Args:
        like: ``(N, D)``, whose shape, dtype and device the noise takes.
        kind: ``"gaussian"`` or ``"rademacher"`` (lower variance: ``Var = 2 sum_{i != j}
            J_ij^2`` against ``2 ||J||_F^2`` for the Gaussian).

    Returns:
        ``(N, D)``, drawn from torch's global generator.
    """
    if kind == "gaussian":
        return torch.randn_like(like)
    if kind == "rademacher":
        return torch.randint_like(like, 0, 2).mul_(2).sub_(1)
    raise ValueError(f"expected trace noise 'gaussian' or 'rademacher', got {kind!r}")


def jacobian_autograd(f: Tensor, z: Tensor, create_graph: bool) -> Tensor:
    """The Jacobian of ``f`` in ``z``, row by row, by ``D`` backward passes.

    Args:
        f: ``(N, D)`` outputs whose row ``n`` depends on row ``n`` of ``z`` only.
        z: ``(N, D)`` inputs, in ``f``'s graph.
        create_graph: keep the result differentiable (training).

    Returns:
        ``(N, D, D)`` with ``[n, i, j] = d f_i / d z_j``.
    """
    rows = []
    for i in range(f.shape[-1]):
        (g,) = torch.autograd.grad(f[:, i].sum(), z, create_graph=create_graph, retain_graph=True)
        rows.append(g)
    return torch.stack(rows, dim=-2)


def jvp_autograd(f: Tensor, z: Tensor, noise: Tensor, create_graph: bool) -> Tensor:
    """``J e`` by two backward passes (the transpose of a vector-Jacobian product).

    ``u(v) = v^T J`` is linear in ``v``, so ``d (u(v) . e) / dv = J e``.

    Args:
        f: ``(N, D)`` outputs, row ``n`` depending on row ``n`` of ``z`` only.
        z: ``(N, D)`` inputs, in ``f``'s graph.
        noise: ``(N, D)`` vectors ``e``.
        create_graph: keep the result differentiable (training).

    Returns:
        ``(N, D)``.
    """
    v = torch.zeros_like(f, requires_grad=True)
    (vjp,) = torch.autograd.grad(f, z, v, create_graph=True)
    (jvp,) = torch.autograd.grad(vjp, v, noise, create_graph=create_graph)
    return jvp


__all__ = [
    "Noise",
    "TraceEstimate",
    "exact_trace",
    "hutchinson_trace",
    "jacobian_autograd",
    "jvp_autograd",
    "trace_noise",
]
