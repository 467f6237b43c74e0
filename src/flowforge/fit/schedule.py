"""The one learning-rate schedule of every fit (``flowforge train``, ``fit_vi`` and the
estimators): cosine decay, reduce-on-plateau, constant; linear warmup in front of any of them;
the non-finite cut.

A fit whose optimizer groups have peaks of their own (``fit_vi`` with a user's optimizer) builds
the schedule with ``lr=1.0`` and multiplies each group's peak by :meth:`LRSchedule.lr_at`.

The schedule is a pure function of the step and a small JSON-able state, so a resumed run gets
the same learning rate at every step as an uninterrupted one, and extending ``--steps`` on resume
stretches the cosine to the new end.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["LRSchedule"]


class LRSchedule:
    """The learning rate at each step.

    Args:
        kind: ``"cosine"`` (from ``lr`` at step 0 to ``min_lr`` at ``total_steps``),
            ``"plateau"`` (times ``factor`` after ``patience`` evaluations without improvement)
            or ``"constant"``.
        lr: the peak learning rate.
        total_steps: the length of the run.
        min_lr: cosine only: the final learning rate.
        factor: plateau only: the reduction factor.
        patience: plateau only: evaluations without improvement before a reduction.
        warmup_steps: ``W``: the updates at steps ``0 .. W-1`` use ``(step + 1) / W`` times the
            rate the schedule has at step ``W``, a linear ramp up to the peak; the cosine then
            decays from ``W`` to ``total_steps`` (0: no warmup).

    Every kind is further multiplied by :attr:`scale`, which :meth:`cut` lowers after a
    non-finite loss.

    Example:
        >>> s = LRSchedule("cosine", lr=1.0, total_steps=10)
        >>> s.lr_at(0), round(s.lr_at(5), 6), s.lr_at(10)
        (1.0, 0.5, 0.0)
        >>> w = LRSchedule("cosine", lr=1.0, total_steps=14, warmup_steps=4)
        >>> [w.lr_at(i) for i in range(5)], round(w.lr_at(9), 6), w.lr_at(14)
        ([0.25, 0.5, 0.75, 1.0, 1.0], 0.5, 0.0)
    """

    def __init__(
        self,
        kind: str,
        lr: float,
        total_steps: int,
        min_lr: float = 0.0,
        factor: float = 0.5,
        patience: int = 3,
        warmup_steps: int = 0,
    ) -> None:
        if kind not in ("cosine", "plateau", "constant"):
            raise ValueError(f"unknown schedule {kind!r}; valid: cosine, plateau, constant")
        self.kind = kind
        self.base_lr = lr
        self.total_steps = total_steps
        self.min_lr = min_lr
        self.factor = factor
        self.patience = patience
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = int(warmup_steps)
        self.scale = 1.0
        self.plateau_scale = 1.0
        self.best = math.inf
        self.bad_evals = 0

    def lr_at(self, step: int) -> float:
        """The learning rate for the update made at ``step`` (0-based)."""
        w = self.warmup_steps
        if self.kind == "cosine":
            span = max(self.total_steps - w, 1)
            t = min(max(step - w, 0), span) / span
            lr = self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * t))
        else:
            lr = self.base_lr * self.plateau_scale
        if step < w:
            lr *= (step + 1) / w
        return lr * self.scale

    def observe(self, val_nll: float) -> None:
        """Record a validation NLL (plateau: maybe lower the rate)."""
        if self.kind != "plateau":
            return
        if val_nll < self.best:
            self.best, self.bad_evals = val_nll, 0
        else:
            self.bad_evals += 1
            if self.bad_evals > self.patience:
                self.plateau_scale *= self.factor
                self.bad_evals = 0

    def cut(self, factor: float) -> None:
        """Multiply every later learning rate by ``factor`` (after a non-finite loss)."""
        self.scale *= factor

    def state_dict(self) -> dict[str, Any]:
        """The mutable state, JSON-able."""
        keys = ("scale", "plateau_scale", "best", "bad_evals")
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        for k, v in state.items():
            setattr(self, k, v)
