"""The last good state of a fit, and the recovery from a non-finite loss that goes back to it.

A fit takes a snapshot of its state (the trained modules, the optimizer, the moving average of
the weights) after each validation (:meth:`Recovery.take`). A non-finite loss, gradient or
validation value never reaches the weights (:class:`~flowforge.fit.loop.Stepper` skips the
step); :meth:`Recovery.recover` then either stops the fit (``on_nan="stop"``, or too many in a
row: :class:`NonFiniteLoss`, one line) or restores the snapshot and lowers the learning rate
(``on_nan="recover"``), at most ``max_recoveries`` times in a row.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from flowforge.fit.ema import WeightAverage
from flowforge.fit.schedule import LRSchedule
from flowforge.runs import load_state

__all__ = ["NonFiniteLoss", "Recovery"]


class NonFiniteLoss(RuntimeError):
    """Training stopped on a non-finite loss; the last good checkpoint is kept (one line)."""


class Recovery:
    """The last good state of a fit and the NaN policy that goes back to it.

    Args:
        model: the trained model (``ema`` averages its weights).
        optimizer: its optimizer.
        schedule: the learning-rate schedule, cut by ``lr_factor`` at each recovery.
        ema: the moving average of the weights of ``model`` (``None``: none).
        extra: another trained module whose state is restored too (``None``: none).
        on_nan: ``"recover"`` (restore and go on) or ``"stop"`` (raise at once).
        max_recoveries: recoveries in a row after which the fit stops.
        lr_factor: the factor of each cut of the learning rate.
        log: where the recovery's one line goes.

    Attributes:
        streak: recoveries since the last validation (reset by :meth:`take`'s caller).
        total: recoveries in the whole fit.

    Example:
        >>> import math, torch
        >>> net = torch.nn.Linear(1, 1)
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> rec = Recovery(net, opt, LRSchedule("constant", 0.1, 10), log=print)
        >>> rec.take(0)
        >>> with torch.no_grad():
        ...     _ = net.weight.fill_(math.nan)
        >>> rec.recover("step 1: non-finite loss", 1)  # doctest: +ELLIPSIS
        step 1: non-finite loss: skipped the batch, restored the state of step 0 and lowered ...
        >>> bool(torch.isfinite(net.weight).all()), rec.total
        (True, 1)
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: LRSchedule,
        *,
        ema: WeightAverage | None = None,
        extra: nn.Module | None = None,
        on_nan: str = "recover",
        max_recoveries: int = 5,
        lr_factor: float = 0.5,
        log: Callable[[str], None],
    ) -> None:
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.ema, self.extra, self.log = ema, extra, log
        self.on_nan, self.max_recoveries, self.lr_factor = on_nan, max_recoveries, lr_factor
        self.streak = 0
        self.total = 0
        self.step = 0
        self._state: tuple[Any, ...] = ()

    def take(self, step: int) -> None:
        """Keep the current state as the last good one, that of ``step``."""
        self.step = step
        self._state = (
            copy.deepcopy(self.model.state_dict()),
            copy.deepcopy(self.optimizer.state_dict()),
            None if self.ema is None else copy.deepcopy(self.ema.state_dict()),
            None if self.extra is None else copy.deepcopy(self.extra.state_dict()),
        )

    def recover(self, where: str, step: int) -> None:
        """Handle the non-finite value described by ``where`` (met at ``step``): raise
        :class:`NonFiniteLoss`, or restore the last good state and lower the learning rate."""
        if self.on_nan == "stop" or self.streak >= self.max_recoveries:
            why = "on_nan = stop" if self.on_nan == "stop" else "too many in a row"
            raise NonFiniteLoss(
                f"{where}; training stopped ({why}); the last good checkpoint (step "
                f"{self.step}) is kept and the weights file holds the best validated weights"
            )
        model, optimizer, ema, extra = self._state
        self.optimizer.zero_grad(set_to_none=True)
        load_state(self.model, model, "the last good state")
        self.optimizer.load_state_dict(copy.deepcopy(optimizer))
        if self.ema is not None and ema is not None:
            self.ema.load_state_dict(copy.deepcopy(ema), self.model)
        if self.extra is not None and extra is not None:
            load_state(self.extra, extra, "the last good state")
        self.schedule.cut(self.lr_factor)
        self.streak += 1
        self.total += 1
        self.log(
            f"{where}: skipped the batch, restored the state of step {self.step} and lowered the "
            f"learning rate to {self.schedule.lr_at(step):.3g} "
            f"(recovery {self.streak} of {self.max_recoveries})"
        )
