"""The one step engine of every fit: an optimizer step with its schedule, gradient clipping, the
moving average of the weights and the non-finite guard (:class:`Stepper`), and validation with
keep-best and patience, the starting weights included (:class:`KeepBest`).

Objective-agnostic: a program (``flowforge train``, :func:`~flowforge.vi.fit_vi`, the
estimators) brings its objective as a loss closure, its data stream and its defaults, and decides
when to validate; the engine owns what a step and a validation do to the weights.

A non-finite loss (or gradient norm, when checked) never reaches the weights: the step is
skipped (no optimizer step, no average update) and ``on_non_finite(what, value, step)`` decides: raise (the default,
:class:`NonFiniteStep`), or restore a last good state and return (a recovery).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from flowforge.fit.ema import WeightAverage
from flowforge.fit.schedule import LRSchedule

__all__ = ["KeepBest", "NonFiniteStep", "Stepper"]


class NonFiniteStep(FloatingPointError):
    """A step's loss or gradient norm was infinite or NaN (one line naming the step)."""


def _raise(what: str, value: float, step: int) -> None:
    raise NonFiniteStep(f"the {what} is {value} at step {step}")


class Stepper:
    """One optimizer step: zero the gradients, evaluate the loss, check it, backpropagate, clip
    and check the gradient norm, set the learning rate of the step, update, average.

    Args:
        optimizer: the optimizer over ``params``.
        schedule: the learning rate at each step (:class:`~flowforge.fit.schedule.LRSchedule`).
        params: the trained parameters (clipped together); default: the optimizer's.
        clip: the largest gradient norm (``None``: no clipping and no check of the norm).
        check_gradient: with ``clip``, a non-finite gradient norm skips the step (else it is
            clipped as it is: an infinite norm scales the gradients to zero, ``fit_vi``'s and
            the estimators' behaviour).
        peaks: with ``peaks``, group ``i``'s rate is ``peaks[i] * schedule.lr_at(step)`` (a
            schedule built with ``lr=1.0``: groups with peaks of their own); without, every
            group's rate is ``schedule.lr_at(step)``.
        ema: the moving average of the weights of ``model``, updated after each step.
        model: the model that ``ema`` averages.
        on_non_finite: called as ``on_non_finite(what, value, step)`` for a non-finite loss or
            gradient norm (``what``: ``"loss"`` or ``"gradient norm"``); it raises, or restores
            a state and returns, and the step is then skipped. Default: raise
            :class:`NonFiniteStep`.
        backward: backpropagates the loss (default ``Tensor.backward``; ``flowforge train``
            turns an ODE solver's failure in an adjoint's backward solve into its own error).

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> stepper = Stepper(opt, LRSchedule("cosine", 0.1, total_steps=10), clip=1.0)
        >>> x = torch.ones(4, 2)
        >>> loss = stepper.step(0, lambda: net(x).pow(2).mean())
        >>> loss is not None and loss.requires_grad
        False
        >>> opt.param_groups[0]["lr"]
        0.1
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: LRSchedule,
        *,
        params: Sequence[Tensor] | None = None,
        clip: float | None = None,
        check_gradient: bool = True,
        peaks: Sequence[float] | None = None,
        ema: WeightAverage | None = None,
        model: nn.Module | None = None,
        on_non_finite: Callable[[str, float, int], None] = _raise,
        backward: Callable[[Tensor], None] = Tensor.backward,
    ) -> None:
        if ema is not None and model is None:
            raise ValueError("Stepper: an average of the weights (ema) needs the model it averages")
        self.optimizer, self.schedule = optimizer, schedule
        self.params = (
            list(params)
            if params is not None
            else [p for g in optimizer.param_groups for p in g["params"]]
        )
        self.clip, self.ema, self.model, self.on_non_finite = clip, ema, model, on_non_finite
        self.peaks = None if peaks is None else list(peaks)
        self.backward, self.check_gradient = backward, check_gradient

    def set_lr(self, step: int) -> float:
        """Set every group's learning rate for the update made at ``step``; returns the first
        group's."""
        rate = self.schedule.lr_at(step)
        groups = self.optimizer.param_groups
        if self.peaks is None:
            for group in groups:
                group["lr"] = rate
        else:
            for group, peak in zip(groups, self.peaks):
                group["lr"] = peak * rate
        return float(groups[0]["lr"])

    def step(self, step: int, loss: Callable[[], Tensor | tuple[Tensor, Tensor]]) -> Tensor | None:
        """Take the update of ``step`` (0-based) on the scalar ``loss()``; returns the detached
        loss, or ``None`` when a non-finite loss or gradient norm skipped the step.

        ``loss()`` may return a pair ``(to backpropagate, the loss)`` where they differ (a
        process of a multi-process run backpropagates its slice; the loss checked and returned
        is the global batch's).
        """
        self.optimizer.zero_grad(set_to_none=True)
        out = loss()
        value, monitored = out if isinstance(out, tuple) else (out, out)
        if not bool(torch.isfinite(monitored)):
            self.on_non_finite("loss", float(monitored.detach()), step)
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.backward(value)
        if self.clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip)
            if self.check_gradient and not bool(torch.isfinite(norm)):
                self.on_non_finite("gradient norm", float(norm), step)
                self.optimizer.zero_grad(set_to_none=True)
                return None
        self.set_lr(step)
        self.optimizer.step()
        if self.ema is not None:
            assert self.model is not None
            self.ema.update(self.model)
        return monitored.detach()


class KeepBest:
    """Validation bookkeeping: the best value so far, its step and weights, and patience.

    Args:
        state: returns the weights to keep when a value is the best (e.g. ``model.state_dict``
            or the moving average); they are deep-copied.
        patience: validations without improvement after which :attr:`stop` is true (0: never).
        rel_tol: an improvement must beat the best by ``rel_tol * max(1, |best|)`` (0: any
            lower value).
        on_best: called as ``on_best(step, value, weights)`` when a value is the best (to write
            the weights file).

    Attributes:
        best: the best value (``inf`` before any).
        best_step: its step (0: the starting weights).
        weights: the kept weights (``None`` before any).
        bad: validations since the last improvement.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(1, 1)
        >>> keep = KeepBest(net.state_dict, patience=2)
        >>> keep.start(5.0)
        >>> [keep.observe(s, v) for s, v in [(10, 4.0), (20, 4.5), (30, 4.2)]], keep.stop
        ([True, False, False], True)
        >>> keep.best, keep.best_step
        (4.0, 10)
    """

    def __init__(
        self,
        state: Callable[[], dict[str, Tensor]],
        *,
        patience: int = 0,
        rel_tol: float = 0.0,
        on_best: Callable[[int, float, dict[str, Tensor]], None] | None = None,
    ) -> None:
        self.state, self.patience, self.rel_tol, self.on_best = state, patience, rel_tol, on_best
        self.best = math.inf
        self.best_step = 0
        self.weights: dict[str, Tensor] | None = None
        self.bad = 0

    def start(self, value: float) -> None:
        """Validate the starting weights (step 0): a finite ``value`` lower than the best is
        kept (a flow that starts at a fit, e.g. a table's whitened Gaussian, then ends no worse
        than its start); patience is not counted."""
        if math.isfinite(value) and value < self.best:
            self._keep(0, value)

    def observe(self, step: int, value: float) -> bool:
        """Record the validation ``value`` of ``step``; returns whether it is the new best."""
        best = self.best
        margin = self.rel_tol * max(1.0, abs(best) if math.isfinite(best) else 1.0)
        if value < best - margin:
            self._keep(step, value)
            return True
        self.bad += 1
        return False

    @property
    def stop(self) -> bool:
        """Whether patience has run out."""
        return bool(self.patience) and self.bad >= self.patience

    def _keep(self, step: int, value: float) -> None:
        self.best, self.best_step, self.bad = value, step, 0
        self.weights = copy.deepcopy(self.state())
        if self.on_best is not None:
            self.on_best(step, value, self.weights)

    def state_dict(self) -> dict[str, Any]:
        """The counters and the kept weights (for a checkpoint)."""
        keys = ("best", "best_step", "bad", "weights")
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        for k, v in state.items():
            setattr(self, k, v)
