"""The ODE solves of a :class:`~flowforge.transforms.CNF`: augmented dynamics and NFE records.

One solve integrates the state ``(z, ladj[, kinetic, jacobian][, context])`` (a value-only
solve: ``(z[, context])``, no trace) in normalised time ``s = t / T`` with torchdiffeq (``odeint``, or ``odeint_adjoint``), counting every
evaluation of the dynamics in a :class:`SolveRecord` and stopping with a one-line
:class:`SolverError` past the evaluation ceiling or on torchdiffeq's step-size underflow.
The counters are Python integers and the time reached is kept as a tensor: an evaluation
makes no host synchronisation of its own. The adaptive solver's error control looks at ``z``
and ``ladj`` only (:func:`state_norm`), not at the regulariser integrals; a value-only solve's
at ``z`` alone (:func:`value_norm`), at the same tolerances.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from flowforge.core.extras import require
from flowforge.functional.dispatch import eager_kernels_allowed
from flowforge.functional.trace import (
    TraceEstimate,
    exact_trace,
    hutchinson_trace,
    jacobian_autograd,
    jvp_autograd,
)
from flowforge.nn.ode import ODENet, TimeMLP


class SolvedFlow(Protocol):
    """What a solve reads of its :class:`~flowforge.transforms.CNF` (defined in
    :mod:`flowforge.transforms.continuous`, which imports this module)."""

    net: nn.Module
    max_nfe: int

    def time_length(self) -> Tensor: ...


ADAPTIVE = ("dopri5",)
FIXED_STEP = ("rk4", "euler")


class SolverError(RuntimeError):
    """An ODE solve that failed (step size underflow, too many evaluations); one line."""


@dataclass
class SolveRecord:
    """What one solve of a :class:`~flowforge.transforms.CNF` did (the latest: ``last_solve``).

    Attributes:
        direction: ``"forward"`` (data -> latent) or ``"inverse"``.
        nfe_forward: evaluations of the dynamics in the solve itself.
        nfe_backward: evaluations in the adjoint's backward solve (0 until backpropagation,
            always 0 without the adjoint: direct backpropagation solves nothing).
        kinetic: ``(N,)`` ``∫_0^T ||f||^2 dt`` per row, when regularisers were tracked.
        jacobian: ``(N,)`` ``∫_0^T ||df/dz||_F^2 dt`` per row (Hutchinson's estimate when the
            trace is), when regularisers were tracked.
        backward_counter: a 0-dim tensor that counts the backward evaluations in place
            during backpropagation (so a loss term logged after ``backward()`` holds them).
        s_last: the normalised time ``s = t / T`` of the latest evaluation (a tensor).
        time: the integration time ``T`` of the solve (a detached tensor).
        value_only: the solve integrated the state alone (no ``ladj``, no trace).
        rtol: the relative tolerance the adaptive solver ran at (``None``: a fixed-step
            method): the CNF's, tightened to ``EVAL_TOLERANCE`` in evaluation, and at least
            :func:`tolerance_floor` of the solve's dtype.
        atol: the absolute tolerance it ran at, likewise.
    """

    direction: str
    nfe_forward: int = 0
    nfe_backward: int = 0
    kinetic: Tensor | None = None
    jacobian: Tensor | None = None
    backward_counter: Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.float64))
    s_last: Tensor | None = None
    time: Tensor = field(default_factory=lambda: torch.ones(()))
    value_only: bool = False
    rtol: float | None = None
    atol: float | None = None

    @property
    def t_reached(self) -> float:
        """The last time ``t`` at which the dynamics was evaluated (0 before any)."""
        return 0.0 if self.s_last is None else float(self.s_last) * float(self.time)


def torchdiffeq_module() -> Any:
    """torchdiffeq; :class:`~flowforge.core.extras.MissingExtra` (one line naming the ``ode``
    extra) without it."""
    return require("torchdiffeq", "ode", "a CNF (FFJORD), which solves ODEs,")


class Dynamics:
    """The augmented right-hand side of one solve, in normalised time ``s``.

    State: ``(z, ladj[, kinetic, jacobian][, context])``; the trace noise (``None``: the
    exact trace) is drawn once before the solve and held fixed through it and its adjoint.
    A value-only solve (``record.value_only``) has the state ``(z[, context])`` and
    evaluates the velocity alone: no Jacobian, trace or regulariser.

    Args:
        cnf: the flow whose ``net`` is the velocity.
        record: where the evaluations are counted.
        context: ``(N, C)`` or ``None`` (when it is not part of the state).
        noise: ``(N, D)`` Hutchinson probes, or ``None``.
        regularize: also integrate the RNODE regularisers.
        sign: ``+1`` forward, ``-1`` inverse (the regularisers are integrated forward).
        context_in_state: the context is the state's last entry (adjoint gradients to it).
    """

    def __init__(
        self,
        cnf: SolvedFlow,
        record: SolveRecord,
        context: Tensor | None,
        noise: Tensor | None,
        regularize: bool,
        sign: float,
        context_in_state: bool,
    ) -> None:
        self.cnf, self.record, self.context, self.noise = cnf, record, context, noise
        self.regularize, self.sign, self.context_in_state = regularize, sign, context_in_state
        self.fused = type(cnf.net) in (ODENet, TimeMLP) and eager_kernels_allowed()
        self.backward = False

    def _count(self, s: Tensor) -> None:
        r, max_nfe = self.record, self.cnf.max_nfe
        r.s_last = s.detach()
        if self.backward:
            r.nfe_backward += 1
            r.backward_counter += 1
            n, phase = r.nfe_backward, "backward (adjoint)"
        else:
            r.nfe_forward += 1
            n, phase = r.nfe_forward, r.direction
        if n > max_nfe:
            raise SolverError(
                f"CNF {phase} solve stopped after {n} function evaluations (max_nfe = "
                f"{max_nfe}) at t = {r.t_reached:.6g} of [0, {float(r.time):.6g}]"
                "; the dynamics is too stiff for rtol/atol: lower the tolerances' demands, add "
                "regularisers, or raise max_nfe"
            )

    def _estimate(self, t: Tensor, z: Tensor, ctx: Tensor | None) -> tuple[Tensor, TraceEstimate]:
        noise, exact, net = self.noise, self.noise is None, self.cnf.net
        if self.fused:  # tangents as rows: None is the identity (the whole Jacobian)
            tangents = None if exact else noise.unsqueeze(-2)  # type: ignore[union-attr]
            f, jv = typing.cast("ODENet | TimeMLP", net).forward_and_jvp(t, z, tangents, ctx)
            return f, exact_trace(jv) if exact else hutchinson_trace(noise, jv[:, 0])  # type: ignore[arg-type]
        graph = torch.is_grad_enabled()
        with torch.enable_grad():
            # Differentiate through z when the caller's graph continues through it.
            zz = z if graph and z.requires_grad else z.detach().requires_grad_(True)
            f = net(t, zz, ctx)
            if exact:
                est = exact_trace(jacobian_autograd(f, zz, graph))
            elif self.regularize:  # ||J e||^2 as in the fused path
                est = hutchinson_trace(noise, jvp_autograd(f, zz, noise, graph))  # type: ignore[arg-type]
            else:  # e^T J e from one vector-Jacobian product
                (vjp,) = torch.autograd.grad(f, zz, noise, create_graph=graph)
                est = hutchinson_trace(noise, vjp)  # type: ignore[arg-type]
        if not graph:
            f, est = f.detach(), TraceEstimate(est.trace.detach(), est.frobenius.detach())
        return f, est

    def __call__(self, s: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        self._count(s)
        z = state[0]
        ctx = state[-1] if self.context_in_state else self.context
        T = self.cnf.time_length().to(z)
        if self.record.value_only:
            out = [T * self.cnf.net(s * T, z, ctx)]
        else:
            f, est = self._estimate(s * T, z, ctx)
            out = [T * f, T * est.trace]
        if self.regularize:
            out += [self.sign * T * f.square().sum(-1), self.sign * T * est.frobenius]
        if self.context_in_state:
            out.append(torch.zeros_like(state[-1]))
        return tuple(out)


def solver_options(
    method: str, rtol: float, atol: float, steps: int, dtype: torch.dtype
) -> dict[str, Any]:
    """torchdiffeq's keyword arguments: tolerances floored at :func:`tolerance_floor` of
    ``dtype`` (a CNF refuses smaller ones for its own dtype; a solve in a coarser one, after a
    cast, runs at the floor and its :class:`SolveRecord` says so)."""
    if method in FIXED_STEP:
        return {"method": method, "options": {"step_size": 1.0 / steps}}
    floor = tolerance_floor(dtype)
    return {"method": method, "rtol": max(rtol, floor), "atol": max(atol, floor)}


def tolerance_floor(dtype: torch.dtype) -> float:
    """``32 eps`` of ``dtype``: the smallest tolerance an adaptive solve in it resolves
    (``3.8e-6`` in float32, ``7.1e-15`` in float64)."""
    return 32 * float(torch.finfo(dtype).eps)


def check_tolerance(name: str, value: object, dtype: torch.dtype) -> float:
    """``value`` as a solver tolerance for ``dtype``: a finite number at or above
    :func:`tolerance_floor`; else a one-line ``ValueError`` naming both.

    Example:
        >>> check_tolerance("rtol", 1e-5, torch.float32)
        1e-05
        >>> check_tolerance("rtol", 1e-9, torch.float32)
        Traceback (most recent call last):
        ...
        ValueError: CNF: expected rtol >= 3.8e-06 (32 eps of float32, the smallest tolerance a float32 solve resolves; build the CNF under torch.set_default_dtype(torch.float64) for tighter ones), got 1e-09
    """
    floor = tolerance_floor(dtype)
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and value >= floor):  # type: ignore[operator, arg-type]
        kind = str(dtype).removeprefix("torch.")
        hint = (
            "; build the CNF under torch.set_default_dtype(torch.float64) for tighter ones"
            if dtype != torch.float64
            else ""
        )
        raise ValueError(
            f"CNF: expected {name} >= {floor:.2g} (32 eps of {kind}, the smallest tolerance a "
            f"{kind} solve resolves{hint}), got {value!r}"
        )
    return float(value)  # type: ignore[arg-type]


def state_norm(state: tuple[Tensor, ...]) -> Tensor:
    """The adaptive solver's error norm: the larger RMS of the ``z`` and ``ladj`` parts."""
    return torch.maximum(state[0].square().mean().sqrt(), state[1].square().mean().sqrt())


def value_norm(state: tuple[Tensor, ...]) -> Tensor:
    """A value-only solve's error norm: the RMS of the ``z`` part (:func:`state_norm`'s
    first term)."""
    return state[0].square().mean().sqrt()


def integrate(
    dyn: Dynamics,
    state: list[Tensor],
    inverse: bool,
    options: dict[str, Any],
    adjoint_params: tuple[Tensor, ...] | None,
) -> tuple[Tensor, ...]:
    """Solve ``dyn`` over normalised time ``[0, 1]`` (``[1, 0]`` inverse); the final state.

    Args:
        dyn: the augmented dynamics (its record counts the evaluations).
        state: the initial state.
        inverse: integrate from ``s = 1`` to ``0``.
        options: from :func:`solver_options`.
        adjoint_params: the parameters of an adjoint solve, or ``None`` for direct
            backpropagation through the solver.

    Raises:
        SolverError: on torchdiffeq's step-size underflow or a non-finite state (and, from
            the dynamics, past ``max_nfe``).
    """
    z = state[0]
    s = torch.tensor([1.0, 0.0] if inverse else [0.0, 1.0], dtype=z.dtype, device=z.device)
    tde = torchdiffeq_module()
    if options["method"] in ADAPTIVE and dyn.record.value_only:
        options = {**options, "options": {"norm": value_norm}}  # z only, as state_norm's z
    elif options["method"] in ADAPTIVE and len(state) > 2:
        # Error control on (z, ladj) only: the regulariser integrals (and a constant context)
        # feed nothing back, and their large integrands would otherwise shrink every step.
        options = {**options, "options": {"norm": state_norm}}
    try:
        if adjoint_params is not None:
            adj: dict[str, Any] = {"adjoint_params": adjoint_params}
            if options["method"] in ADAPTIVE:  # error control on the state, not the parameters
                adj["adjoint_options"] = {"norm": "seminorm"}
            out = tde.odeint_adjoint(dyn, tuple(state), s, **options, **adj)
        else:
            out = tde.odeint(dyn, tuple(state), s, **options)
    except AssertionError as e:  # torchdiffeq's "underflow in dt", non-finite state
        r = dyn.record
        raise SolverError(
            f"CNF {r.direction} solve failed after {r.nfe_forward} function evaluations at "
            f"t = {r.t_reached:.6g} of [0, {float(r.time):.6g}]: {e}"
        ) from None
    dyn.backward = True  # evaluations from now on are the adjoint's
    return tuple(o[-1] for o in out)


__all__ = [
    "ADAPTIVE",
    "FIXED_STEP",
    "Dynamics",
    "SolveRecord",
    "SolverError",
    "check_tolerance",
    "integrate",
    "solver_options",
    "state_norm",
    "tolerance_floor",
    "torchdiffeq_module",
    "value_norm",
]
