"""Continuous normalizing flows: a bijection that is the solution map of a neural ODE.

Time convention: the state moves along ``dz/dt = f(z, t, c)`` for ``t`` in ``[0, T]``, with
**the data at t = 0 and the latent at t = T**. :meth:`CNF.forward` (data -> latent, the
density direction) integrates from ``0`` to ``T``, :meth:`CNF.inverse` from ``T`` to ``0``.
Along the way ``d/dt log|det dz(t)/dz(0)| = tr(df/dz)``, so the forward ``ladj`` is
``∫_0^T tr(df/dz) dt`` and the inverse's its negative, accumulated by the same solve. Flow
matching (:class:`flowforge.fit.objectives.FlowMatching`) learns the same field on the straight
paths ``x_t = (1 - t/T) x + (t/T) z`` from data ``x`` to base samples ``z``.

The solver runs in normalised time ``s = t / T`` in ``[0, 1]`` on ``dz/ds = T f(z, sT, c)``,
so a learned ``T`` is an ordinary parameter of the dynamics (exact gradients with and without
the adjoint). Solves are torchdiffeq's (``pip install 'flowforge[ode]'``), imported on the
first solve only.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor, nn

from flowforge.core.bijection import Bijection, batch_shape_of
from flowforge.functional.trace import Noise, trace_noise
from flowforge.transforms.cnf_solve import (
    ADAPTIVE,
    FIXED_STEP,
    Dynamics,
    SolveRecord,
    SolverError,
    check_tolerance,
    integrate,
    solver_options,
    tolerance_floor,
    torchdiffeq_module,
)

Method = Literal["dopri5", "rk4", "euler"]
Trace = Literal["auto", "exact", "hutchinson"]
#: The loosest tolerance (``rtol`` and ``atol``) of an adaptive solve in evaluation mode.
EVAL_TOLERANCE = 1e-5
#: Largest ``D`` at which ``trace="auto"`` trains with the exact trace.
EXACT_MAX_FEATURES = 16


class CNF(Bijection):
    """A continuous normalizing flow: ``z = x + ∫_0^T f(z(t), t, c) dt`` on vectors ``(*, D)``.

    ``forward`` integrates data -> latent (``t`` from 0 to ``T``), ``inverse`` latent -> data,
    each with the exact change of log-density (up to the solver's tolerance) or Hutchinson's
    unbiased estimate of it. The trace of ``df/dz``:

    - ``"exact"``: the whole Jacobian; with an :class:`~flowforge.nn.ODENet` it is propagated
      forward through the network's layers in the same pass (no double backward), otherwise
      ``D`` backward passes. Needed gradients are computed inside ``no_grad`` callers too.
    - ``"hutchinson"``: ``e^T (df/dz) e`` with one probe ``e`` per row, drawn once per solve
      (``noise``) and held fixed along it and its adjoint.
    - ``"auto"`` (default): exact for ``D <= 16``, Hutchinson above.

    Evaluation (``cnf.eval()``) always uses the exact trace unless ``eval_trace="hutchinson"``,
    and the adaptive solver's tolerances no looser than :data:`EVAL_TOLERANCE` (``1e-5``), so
    a reported likelihood is true to the digits printed whatever tolerance trained the flow
    (``rtol = atol = 10`` trained a flow whose test NLL read 2.6124 at those tolerances and
    2.7596 at ``1e-5``).
    :meth:`inverse_value` (sampling) and :meth:`forward_value` integrate the state alone, with
    no trace at all.
    Every solve counts its function evaluations (:attr:`last_solve`, :attr:`nfe_forward`,
    :attr:`nfe_backward`) and stops with a :class:`SolverError` naming them and the time
    reached when they exceed ``max_nfe`` or the step size underflows: never a hang.

    Args:
        net: the dynamics ``f(t, z, context) -> (N, D)`` (``t`` a scalar tensor or ``(N,)``),
            e.g. :class:`~flowforge.nn.ODENet`.
        features: dimension ``D``.
        context: size ``C`` of the context passed to ``net`` (0: none).
        time: the integration time ``T > 0``.
        learn_time: train ``T`` (kept positive as ``exp(log_time)``).
        method: ``"dopri5"`` (adaptive, default), ``"rk4"`` or ``"euler"`` (fixed steps).
        rtol: relative tolerance of the adaptive solver (also of its adjoint): finite and at
            least ``32 eps`` of the CNF's dtype (torch's default dtype when built: ``3.8e-6``
            in float32), else ``ValueError``, here and when set later. A CNF cast to a coarser
            dtype afterwards solves at that dtype's floor; :attr:`last_solve` records the
            tolerances each solve ran at.
        atol: absolute tolerance, likewise.
        solver_steps: number of steps of a fixed-step method over ``[0, T]``.
        adjoint: backpropagate by solving the adjoint ODE backwards (memory independent of
            the number of steps) instead of through the solver's operations.
        trace: ``"auto"``, ``"exact"`` or ``"hutchinson"`` in training.
        noise: Hutchinson probes, ``"rademacher"`` or ``"gaussian"``.
        eval_trace: the trace in evaluation mode, ``"exact"`` or ``"hutchinson"``.
        max_nfe: the most evaluations of the dynamics one solve may take.
        steps: the old name of ``solver_steps`` (deprecated: ``steps`` are optimisation steps).

    References:
        Chen, Rubanova, Bettencourt, Duvenaud (2018). Neural Ordinary Differential
        Equations. arXiv:1806.07366.

        Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud (2019). FFJORD: Free-form
        Continuous Dynamics for Scalable Reversible Generative Models. arXiv:1810.01367.

    Example:
        >>> import torch, flowforge as ff
        >>> net = ff.nn.ODENet(2, hidden=(16,), zero_last=False)
        >>> ff.transforms.CNF(net, 2, rtol=1e-9)  # float32 resolves no tolerance below 3.8e-6
        Traceback (most recent call last):
        ...
        ValueError: CNF: expected rtol >= 3.8e-06 (32 eps of float32, ...
        >>> torch.set_default_dtype(torch.float64)
        >>> net = ff.nn.ODENet(2, hidden=(16,), zero_last=False)
        >>> cnf = ff.transforms.CNF(net, 2, rtol=1e-9, atol=1e-9)
        >>> torch.set_default_dtype(torch.float32)
        >>> x = torch.randn(4, 2, dtype=torch.float64)
        >>> z, ladj = cnf(x)
        >>> x2, ladj2 = cnf.inverse(z)  # a round trip to the solver's accuracy
        >>> torch.allclose(x2, x, atol=1e-6), torch.allclose(ladj2, -ladj, atol=1e-6)
        (True, True)
        >>> cnf.last_solve.direction, cnf.nfe_forward > 0
        ('inverse', True)
        >>> torch.allclose(cnf.inverse_value(z), x2, atol=1e-6), cnf.last_solve.value_only
        (True, True)
        >>> cnf.last_solve.rtol  # what the solve ran at
        1e-09
    """

    def __init__(
        self,
        net: nn.Module,
        features: int,
        *,
        context: int = 0,
        time: float = 1.0,
        learn_time: bool = False,
        method: Method = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        solver_steps: int = 20,
        adjoint: bool = True,
        trace: Trace = "auto",
        noise: Noise = "rademacher",
        eval_trace: Literal["exact", "hutchinson"] = "exact",
        max_nfe: int = 10_000,
        steps: int | None = None,
    ) -> None:
        super().__init__((features,))
        if steps is not None:
            warnings.warn(
                "CNF(steps=...) is deprecated: use solver_steps=... (steps are optimisation "
                "steps only)",
                DeprecationWarning,
                stacklevel=2,
            )
            solver_steps = steps
        torchdiffeq_module()  # a missing extra fails here, before a run writes anything
        checks = [
            (method in ADAPTIVE + FIXED_STEP, f"method in {ADAPTIVE + FIXED_STEP}", method),
            (trace in ("auto", "exact", "hutchinson"), "trace in auto/exact/hutchinson", trace),
            (noise in ("rademacher", "gaussian"), "noise rademacher or gaussian", noise),
            (eval_trace in ("exact", "hutchinson"), "eval_trace exact or hutchinson", eval_trace),
            (time > 0, "time > 0", time),
            (solver_steps >= 1, "solver_steps >= 1", solver_steps),
            (max_nfe >= 1, "max_nfe >= 1", max_nfe),
        ]
        for ok, expected, got in checks:
            if not ok:
                raise ValueError(f"CNF: expected {expected}, got {got!r}")
        self.net, self.features, self.context = net, int(features), int(context)
        log_time = torch.tensor(math.log(time))
        if learn_time:
            self.log_time = nn.Parameter(log_time)
        else:
            self.register_buffer("log_time", log_time)
        self.method, self.rtol, self.atol = method, rtol, atol
        self.solver_steps = solver_steps
        self.adjoint, self.trace, self.noise, self.eval_trace = adjoint, trace, noise, eval_trace
        self.max_nfe = int(max_nfe)
        self.last_solve: SolveRecord | None = None
        self._regularize = False

    # ------------------------------------------------------------------ state
    @property
    def rtol(self) -> float:
        """The adaptive solver's relative tolerance (checked when set: :func:`check_tolerance`
        for the CNF's dtype)."""
        return self._rtol

    @rtol.setter
    def rtol(self, value: float) -> None:
        self._rtol = check_tolerance("rtol", value, self.log_time.dtype)

    @property
    def atol(self) -> float:
        """The adaptive solver's absolute tolerance (checked like :attr:`rtol`)."""
        return self._atol

    @atol.setter
    def atol(self, value: float) -> None:
        self._atol = check_tolerance("atol", value, self.log_time.dtype)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> CNF:
        """A cast (``.float()``, ``.to(dtype)``) to a dtype too coarse for the tolerances
        (``rtol=1e-9`` set in float64, then ``.float()``) warns: its solves then run at
        :func:`tolerance_floor` of the new dtype (:attr:`last_solve` records what ran), and the
        tighter tolerances come back with a cast back to float64."""
        before = self.log_time.dtype
        out = super()._apply(fn, recurse)
        dtype = self.log_time.dtype
        floor = tolerance_floor(dtype)
        if dtype != before and self.method in ADAPTIVE and min(self.rtol, self.atol) < floor:
            kind = str(dtype).removeprefix("torch.")
            warnings.warn(
                f"CNF: rtol={self.rtol:g}, atol={self.atol:g} are below {floor:.2g} (32 eps of "
                f"{kind}, the smallest tolerance a {kind} solve resolves): its solves in {kind} "
                f"run at max(tolerance, {floor:.2g}) (last_solve.rtol / .atol record what ran)",
                UserWarning,
                stacklevel=3,
            )
        return out

    def time_length(self) -> Tensor:
        """The integration time ``T``, a scalar tensor (differentiable when learned)."""
        return self.log_time.exp()

    @property
    def nfe_forward(self) -> int:
        """Evaluations of the dynamics in the latest solve (0 before any)."""
        return 0 if self.last_solve is None else self.last_solve.nfe_forward

    @property
    def nfe_backward(self) -> int:
        """Evaluations in the latest solve's adjoint backward solve (0 before it ran)."""
        return 0 if self.last_solve is None else self.last_solve.nfe_backward

    @contextmanager
    def regularizing(self) -> Iterator[None]:
        """Within this block, forward solves also integrate the RNODE regularisers.

        ``∫ ||f||^2 dt`` and ``∫ ||df/dz||_F^2 dt`` per row land in :attr:`last_solve`
        (``kinetic``, ``jacobian``); see :class:`flowforge.train.losses.CNFLikelihood`.
        """
        previous, self._regularize = self._regularize, True
        try:
            yield
        finally:
            self._regularize = previous

    def uses_exact_trace(self) -> bool:
        """Whether a solve now would take the exact trace (mode and ``D`` decide)."""
        if not self.training:
            return self.eval_trace == "exact"
        if self.trace == "auto":
            return self.features <= EXACT_MAX_FEATURES
        return self.trace == "exact"

    def velocity(self, s: Tensor, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The velocity in normalised time, ``dx/ds = T f(x, sT, c)`` (flow matching's).

        ``T`` enters as a constant: flow matching trains the field, not the time.

        Args:
            s: ``(N,)`` times in ``[0, 1]`` (0: data, 1: latent), or a scalar.
            x: ``(N, D)`` states.
            context: ``(N, C)`` or ``None``.

        Returns:
            ``(N, D)``.
        """
        T = self.time_length().detach().to(x)
        return T * self.net(s * T, x, context)

    # ------------------------------------------------------------------ solves
    def _solve(
        self, x: Tensor, context: Tensor | None, inverse: bool, value_only: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """One solve: ``(y, ladj)``, or ``(y, None)`` integrating the state alone."""
        batch = batch_shape_of(x, self.event_shape)
        flat = x.reshape(-1, self.features)  # (N, D)
        ctx = None
        if self.context:
            if context is None or context.shape[-1] != self.context:
                got = None if context is None else tuple(context.shape)
                raise ValueError(f"expected a context of shape (*, {self.context}), got {got}")
            ctx = context.expand(*batch, self.context).reshape(-1, self.context)  # (N, C)
        record = SolveRecord("inverse" if inverse else "forward", value_only=value_only)
        record.time = self.time_length().detach()
        self.last_solve = record
        if flat.shape[0] == 0:
            return x.clone(), None if value_only else x.new_zeros(batch)
        regularize = self._regularize and not inverse and not value_only
        exact = value_only or self.uses_exact_trace()  # a value-only solve draws no noise
        noise = None if exact else trace_noise(flat, self.noise)
        params = tuple(p for p in self.parameters() if p.requires_grad)
        grad = torch.is_grad_enabled() and (
            bool(params) or flat.requires_grad or (ctx is not None and ctx.requires_grad)
        )
        adjoint = self.adjoint and grad
        context_in_state = adjoint and ctx is not None and ctx.requires_grad
        dyn = Dynamics(
            self, record, ctx, noise, regularize, -1.0 if inverse else 1.0, context_in_state
        )
        zeros = flat.new_zeros(flat.shape[0])
        state = [flat] if value_only else [flat, zeros] + ([zeros, zeros] if regularize else [])
        if context_in_state:
            state.append(ctx)  # type: ignore[arg-type]
        rtol, atol = self.rtol, self.atol
        if not self.training:  # a reported likelihood: never at a training-only loose tolerance
            rtol, atol = min(rtol, EVAL_TOLERANCE), min(atol, EVAL_TOLERANCE)
        opts = solver_options(self.method, rtol, atol, self.solver_steps, x.dtype)
        record.rtol, record.atol = opts.get("rtol"), opts.get("atol")
        out = integrate(dyn, state, inverse, opts, params if adjoint else None)
        if value_only:
            return out[0].reshape(x.shape), None
        if regularize:
            record.kinetic, record.jacobian = out[2], out[3]
        return out[0].reshape(x.shape), out[1].reshape(batch)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data -> latent: integrate from ``t = 0`` to ``T``.

        Args:
            x: ``(*, D)``.
            context: ``(*, C)`` for a conditional CNF.

        Returns:
            ``(z, log|det dz/dx|)`` of shapes ``(*, D)`` and ``(*)``.
        """
        z, ladj = self._solve(x, context, inverse=False)
        assert ladj is not None
        return z, ladj

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Latent -> data: integrate from ``t = T`` to ``0``.

        Args:
            z: ``(*, D)``.
            context: ``(*, C)`` for a conditional CNF.

        Returns:
            ``(x, log|det dx/dz|)`` of shapes ``(*, D)`` and ``(*)``.
        """
        x, ladj = self._solve(z, context, inverse=True)
        assert ladj is not None
        return x, ladj

    def forward_value(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Data -> latent without ``ladj``: the state alone is integrated (no trace, no
        regularisers, even inside :meth:`regularizing`), at the same tolerances, so ``z``
        equals ``forward(x)[0]`` to the solver's accuracy.

        Args:
            x: ``(*, D)``.
            context: ``(*, C)`` for a conditional CNF.

        Returns:
            ``z``, ``(*, D)``.
        """
        return self._solve(x, context, inverse=False, value_only=True)[0]

    def inverse_value(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Latent -> data without ``ladj`` (sampling): one velocity evaluation per step and no
        trace (the exact one costs ``D`` Jacobian products per step); ``x`` equals
        ``inverse(z)[0]`` to the solver's accuracy (same tolerances; the error control then
        looks at the state alone, so the steps may differ).

        Args:
            z: ``(*, D)``.
            context: ``(*, C)`` for a conditional CNF.

        Returns:
            ``x``, ``(*, D)``.
        """
        return self._solve(z, context, inverse=True, value_only=True)[0]

    def extra_repr(self) -> str:
        return (
            f"features={self.features}, context={self.context}, method={self.method!r}, "
            f"rtol={self.rtol}, atol={self.atol}, adjoint={self.adjoint}, trace={self.trace!r}"
        )


__all__ = ["CNF", "EVAL_TOLERANCE", "EXACT_MAX_FEATURES", "SolveRecord", "SolverError"]
