"""The state of a :class:`~flowforge.train.loop.Trainer`: what a checkpoint holds, the snapshot
of the last good state, and the NaN recovery that goes back to it.

A non-finite loss or gradient never reaches the weights: the batch is skipped, and either
training stops (``on_nan="stop"``, :class:`NonFiniteLoss`) or the last good state (model,
optimizer, average of the weights, the objective's own parameters) is restored and the learning
rate lowered (``on_nan="recover"``), at most ``max_nan_recoveries`` times in a row.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from flowforge.fit.ema import WeightAverage
from flowforge.fit.schedule import LRSchedule
from flowforge.runs import RunError, load_state
from flowforge.runs.checkpoint import save_checkpoint
from flowforge.runs.writer import RunWriter
from flowforge.train.batches import TrainStream
from flowforge.train.config import TrainConfig
from flowforge.train.losses import Objective

__all__ = ["NonFiniteLoss", "TrainerState"]

_Snapshot = tuple[int, dict[str, Any], dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]


class NonFiniteLoss(RuntimeError):
    """Training stopped on a non-finite loss; the last good checkpoint is kept (one line)."""


class TrainerState:
    """The checkpointed state of a trainer and its NaN recovery (the base of ``Trainer``)."""

    model: nn.Module
    stream: TrainStream
    cfg: TrainConfig
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    ema: WeightAverage | None
    objective: Objective
    objective_module: nn.Module | None
    checkpoint: Path | None
    writer: RunWriter | None
    log: Callable[[str], None]
    step: int
    best_val_nll: float
    best_step: int
    best_state: dict[str, Tensor] | None
    best_objective_state: dict[str, Tensor] | None
    bad_evals: int
    nan_streak: int
    nan_total: int
    elapsed: float
    stopped_early: bool
    _last_good: _Snapshot

    # -- state --------------------------------------------------------------------------------

    def _objective_state(self) -> dict[str, Tensor] | None:
        """The objective's own state (``None`` unless it is an ``nn.Module``)."""
        module = self.objective_module
        return None if module is None else module.state_dict()

    def _snapshot(self) -> _Snapshot:
        return (
            self.step,
            copy.deepcopy(self.model.state_dict()),
            copy.deepcopy(self.optimizer.state_dict()),
            None if self.ema is None else copy.deepcopy(self.ema.state_dict()),
            copy.deepcopy(self._objective_state()),
        )

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly where this one is."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "stream": self.stream.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "best_state": self.best_state,
            "ema": None if self.ema is None else self.ema.state_dict(),
            "objective": self._objective_state(),
            "best_objective_state": self.best_objective_state,
            "counters": {
                "step": self.step,
                "best_val_nll": self.best_val_nll,
                "best_step": self.best_step,
                "bad_evals": self.bad_evals,
                "nan_streak": self.nan_streak,
                "nan_total": self.nan_total,
                "elapsed": self.elapsed,
                "stopped_early": self.stopped_early,
            },
        }

    def load_state_dict(self, state: dict[str, Any], origin: str = "checkpoint") -> None:
        """Restore :meth:`state_dict` output (for example from a checkpoint file)."""
        load_state(self.model, state["model"], origin)
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.stream.load_state_dict(state["stream"])
        torch.set_rng_state(state["torch_rng"])
        self.best_state = state["best_state"]
        if self.ema is not None:
            saved = state.get("ema")
            if saved is None:
                raise RunError(
                    f"{origin} holds no average of the weights, but ema_decay = "
                    f"{self.cfg.ema_decay}: it was written by another configuration"
                )
            self.ema.load_state_dict(saved, self.model)
        if self.objective_module is not None:
            objective = state.get("objective")
            if objective is None:
                raise RunError(
                    f"{origin} holds no state of the objective {self.objective!r}: it was "
                    "written by another configuration"
                )
            load_state(self.objective_module, objective, origin)
            self.best_objective_state = state.get("best_objective_state")
        for key, value in state["counters"].items():
            setattr(self, key, value)
        self._last_good = self._snapshot()

    def save(self) -> None:
        """Write the checkpoint file (atomically), if there is one."""
        if self.writer is not None:
            self.writer.write_checkpoint(self.state_dict())
        elif self.checkpoint is not None:
            save_checkpoint(self.checkpoint, self.state_dict())

    def _non_finite(self, what: str) -> None:
        where = f"step {self.step + 1}: non-finite {what}"
        last = self._last_good[0]
        if self.cfg.on_nan == "stop" or self.nan_streak >= self.cfg.max_nan_recoveries:
            why = "on_nan = stop" if self.cfg.on_nan == "stop" else "too many in a row"
            raise NonFiniteLoss(
                f"{where}; training stopped ({why}); the last good checkpoint (step {last}) "
                f"is kept and the weights file holds the best validated weights"
            )
        self.optimizer.zero_grad(set_to_none=True)
        load_state(self.model, self._last_good[1], "the last good state")
        self.optimizer.load_state_dict(copy.deepcopy(self._last_good[2]))
        if self.ema is not None and self._last_good[3] is not None:
            self.ema.load_state_dict(copy.deepcopy(self._last_good[3]), self.model)
        if self.objective_module is not None and self._last_good[4] is not None:
            load_state(self.objective_module, self._last_good[4], "the last good state")
        self.schedule.cut(self.cfg.nan_lr_factor)
        self.nan_streak += 1
        self.nan_total += 1
        self.log(
            f"{where}: skipped the batch, restored the state of step {last} and lowered the "
            f"learning rate to {self.schedule.lr_at(self.step):.3g} "
            f"(recovery {self.nan_streak} of {self.cfg.max_nan_recoveries})"
        )
