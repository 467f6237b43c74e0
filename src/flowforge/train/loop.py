"""The fit loop: an objective (maximum likelihood by default) with validation, early stopping,
checkpoints and NaN recovery.

The loop minimises whatever :class:`~flowforge.train.losses.Objective` it is given and logs
the objective's extra terms; validation is always the NLL of the validation rows (and their
bits/dim for images). With ``ema_decay > 0`` the loop keeps a moving average of the weights
(:mod:`.ema`): the average is what is validated, kept as the best weights, written to the
weights file and left in the model at the end; the raw weights keep training, and both are in
the checkpoint. A validation row with a non-finite log-likelihood makes the validation NLL
non-finite (never averaged away), which the NaN policy below handles.

An objective that is an ``nn.Module`` with parameters (variational dequantization's noise flow)
is trained jointly: its parameters join the optimizer, its state is in the checkpoint, in the
NaN-recovery snapshot and in the best state (written to ``objective_weights``). With such an
objective the validation rows are the images' integer levels and the validation NLL is the
variational bound ``-E_q[log p(u) - log q(e | v)]`` (one noise sample per row, seeded), in the
units of the uniform runs' NLL of ``u``. The moving average covers the flow's weights only.

An ODE solve that fails (:class:`~flowforge.transforms.continuous.SolverError`, or torchdiffeq's
``AssertionError`` from an adjoint's backward solve) stops training with a
:class:`~flowforge.transforms.continuous.SolverError` of one line naming the step; the last good
checkpoint and the best weights are kept.

Every ``eval_every`` steps (and at the last step) the loop computes the validation NLL, appends a
record to ``metrics.jsonl``, keeps the best weights, and writes a checkpoint holding everything
needed to continue exactly (model, optimizer, schedule, batch stream, random states, best
weights, counters). A non-finite loss or gradient never reaches the weights: the batch is
skipped, and either training stops (``on_nan="stop"``) or the last good state is restored and the
learning rate lowered (``on_nan="recover"``).
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from flowforge.data.dequantization import dequantized_log_likelihood
from flowforge.eval.likelihood import (
    NonFiniteLikelihood,
    bits_per_dim,
    check_finite,
    log_likelihoods,
)
from flowforge.runs import RunError, load_state, save_weights
from flowforge.train.batches import TrainStream
from flowforge.train.checkpoint import save_checkpoint
from flowforge.train.config import TrainConfig
from flowforge.train.ema import WeightAverage
from flowforge.train.losses import Loss, MaximumLikelihood, Objective, VariationalDequantization
from flowforge.train.metrics import MetricsLog
from flowforge.train.schedule import LRSchedule
from flowforge.transforms.continuous import SolverError

__all__ = ["FitOutcome", "NonFiniteLoss", "Trainer"]


class NonFiniteLoss(RuntimeError):
    """Training stopped on a non-finite loss; the last good checkpoint is kept (one line)."""


@dataclass
class FitOutcome:
    """How a fit ended.

    Attributes:
        step: the last step taken.
        reason: ``"completed"`` or ``"early stopping"``.
        best_step: the step of the best validation NLL (whose weights the flow ends with when
            ``restore_best``).
        best_val_nll: that NLL.
    """

    step: int
    reason: str
    best_step: int
    best_val_nll: float


def _stderr(msg: str) -> None:
    tqdm.write(msg, file=sys.stderr)


class Trainer:
    """Trains a flow by minimising an objective; its whole state round-trips through a checkpoint.

    Args:
        model: the flow (already on ``device``).
        stream: the training batches.
        val: ``(N, *event_shape)`` validation rows in the flow's input units.
        cfg: the options (optimizer, schedule, clipping, validation, patience, NaN policy).
        total_steps: the step to train up to.
        device: where batches go.
        metrics: where to append evaluation records (``None``: nowhere).
        checkpoint: the checkpoint file to write at every evaluation (``None``: none).
        weights: the file that always holds the best weights so far (``None``: none).
        log: where to send messages (stderr by default).
        objective: what a training step minimises, ``objective(model, batch) -> Loss``
            (default: :class:`~flowforge.train.losses.MaximumLikelihood`). Its extra terms
            are averaged between evaluations and logged as ``train_<name>``.
        levels: images: ``K`` levels per value; the validation bits/dim is then logged as
            ``val_bpd`` (:func:`~flowforge.eval.likelihood.bits_per_dim`).
        objective_weights: the file that holds the objective's parameters of the best state
            (an ``nn.Module`` objective only; ``None``: none).
    """

    def __init__(
        self,
        model: nn.Module,
        stream: TrainStream,
        val: Tensor,
        cfg: TrainConfig,
        total_steps: int,
        device: torch.device,
        *,
        metrics: MetricsLog | None = None,
        checkpoint: Path | None = None,
        weights: Path | None = None,
        log: Callable[[str], None] = _stderr,
        objective: Objective | None = None,
        levels: int | None = None,
        objective_weights: Path | None = None,
    ) -> None:
        self.model, self.stream, self.val, self.cfg = model, stream, val, cfg
        self.total_steps, self.device = total_steps, device
        self.metrics, self.checkpoint, self.weights, self.log = metrics, checkpoint, weights, log
        self.objective: Objective = MaximumLikelihood() if objective is None else objective
        self.objective_module = self.objective if isinstance(self.objective, nn.Module) else None
        self.objective_weights = objective_weights
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        self.params = [p for p in model.parameters() if p.requires_grad]
        if self.objective_module is not None:  # trained jointly (a learned dequantizer)
            self.params += [p for p in self.objective_module.parameters() if p.requires_grad]
        self.optimizer = opt_cls(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.schedule = LRSchedule(
            cfg.schedule,
            cfg.lr,
            total_steps,
            cfg.min_lr,
            cfg.lr_factor,
            cfg.lr_patience,
            cfg.warmup_steps,
        )
        self.levels = levels
        self.ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.last_val_bpd: float | None = None
        self.step = 0
        self.best_val_nll = math.inf
        self.best_step = 0
        self.best_state: dict[str, Tensor] | None = None
        self.best_objective_state: dict[str, Tensor] | None = None
        self.bad_evals = 0
        self.nan_streak = 0
        self.nan_total = 0
        self.elapsed = 0.0
        self.stopped_early = False
        self._loss_sum, self._loss_count = 0.0, 0
        self._term_sums: dict[str, float] = {}
        self.last_terms: dict[str, float] = {}
        self._last_good = self._snapshot()

    # -- state --------------------------------------------------------------------------------

    def _objective_state(self) -> dict[str, Tensor] | None:
        """The objective's own state (``None`` unless it is an ``nn.Module``)."""
        module = self.objective_module
        return None if module is None else module.state_dict()

    def _snapshot(
        self,
    ) -> tuple[int, dict[str, Any], dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]:
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
        if self.checkpoint is not None:
            save_checkpoint(self.checkpoint, self.state_dict())

    # -- training -----------------------------------------------------------------------------

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

    def _loss(self, x: Tensor) -> Loss:
        """The objective on batch ``x``, checked: a :class:`Loss` with a scalar value."""
        out = self.objective(self.model, x)
        if not isinstance(out, Loss):
            raise TypeError(
                f"the objective {self.objective!r} returned a {type(out).__name__}; "
                "expected a flowforge.train.losses.Loss"
            )
        if out.value.dim() != 0:
            raise ValueError(
                f"the objective {self.objective!r} returned a loss of shape "
                f"{tuple(out.value.shape)}; expected a scalar (shape ())"
            )
        for name, term in out.terms.items():
            if name == "loss" or term.dim() != 0:
                why = "the name 'loss' is the value's" if name == "loss" else "not a scalar"
                raise ValueError(
                    f"the objective {self.objective!r} returned a term {name!r} that cannot be "
                    f"logged ({why}); expected scalar terms under other names"
                )
        return out

    def train_step(self, x: Tensor) -> float | None:
        """One optimizer step on batch ``x``; returns the loss, or ``None`` if it was skipped.

        The objective's extra terms of the step are left in :attr:`last_terms` (empty when the
        step was skipped).
        """
        self.optimizer.zero_grad(set_to_none=True)
        self.last_terms = {}
        out = self._loss(x)
        loss = out.value
        if not bool(torch.isfinite(loss)):
            self._non_finite("loss")
            return None
        try:
            loss.backward()
        except AssertionError as e:  # torchdiffeq's checks in an adjoint's backward solve
            raise SolverError(f"the backward (adjoint) ODE solve failed: {e}") from None
        max_norm = self.cfg.clip_grad if self.cfg.clip_grad > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        if not bool(torch.isfinite(norm)):
            self._non_finite("gradient")
            return None
        lr = self.schedule.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.last_terms = {name: float(t.detach()) for name, t in out.terms.items()}
        return float(loss.detach())

    def evaluated_state(self) -> dict[str, Tensor]:
        """The weights that are validated and saved: the average, else the current weights."""
        if self.ema is not None and self.ema.state is not None:
            return self.ema.state
        return self.model.state_dict()

    def evaluate(self) -> float:
        """Validation NLL (nats) of the evaluated weights (:meth:`evaluated_state`).

        Any non-finite row makes the result NaN; :attr:`last_val_bpd` gets the bits/dim for
        images.
        """
        swap = self.ema is not None and self.ema.state is not None
        raw = copy.deepcopy(self.model.state_dict()) if swap else None
        try:
            if swap:
                load_state(self.model, self.evaluated_state(), "the average of the weights")
            ll = self._val_log_likelihoods()
        finally:
            if raw is not None:
                load_state(self.model, raw, "the current weights")
        finite = bool(torch.isfinite(ll).all()) and ll.numel() > 0
        if not finite:
            try:
                check_finite(ll, "validation log-likelihood")
            except NonFiniteLikelihood as e:
                self.log(f"step {self.step}: {e}")
        nll = float(-ll.mean()) if finite else math.nan
        self.last_val_bpd = None
        if self.levels is not None and finite:
            dim = math.prod(self.val.shape[1:])
            self.last_val_bpd = float(bits_per_dim(ll, dim, self.levels).mean())
        return nll

    def _val_log_likelihoods(self) -> Tensor:
        """``(N,)`` validation log-likelihoods of ``u`` (a learned dequantizer: its bound)."""
        if not isinstance(self.objective, VariationalDequantization):
            return log_likelihoods(self.model, self.val, self.cfg.eval_batch_size, self.device)
        deq = self.objective.dequantizer
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.cfg.seed + 104_729)  # the same noise at every evaluation
            try:
                res = dequantized_log_likelihood(
                    self.model, deq, self.val.to(self.device), 1, self.cfg.eval_batch_size
                )
            except FloatingPointError:
                return torch.full((self.val.shape[0],), math.nan, dtype=torch.float64)
        return res.bound + deq.dim * math.log(deq.levels)  # E_q[log p(u) - log q(e | v)]

    def _solver_failed(self, e: SolverError) -> SolverError:
        """The error that stops training on a failed ODE solve (one line)."""
        return SolverError(
            f"step {self.step + 1}: {e}; training stopped; the last good checkpoint (step "
            f"{self._last_good[0]}) is kept and the weights file holds the best validated weights"
        )

    def _after_eval(self, val_nll: float) -> dict[str, Any]:
        if not math.isfinite(val_nll):
            self._non_finite("validation NLL")
            return {}
        self.schedule.observe(val_nll)
        if val_nll < self.best_val_nll:
            self.best_val_nll, self.best_step, self.bad_evals = val_nll, self.step, 0
            self.best_state = copy.deepcopy(self.evaluated_state())
            if self.weights is not None:
                save_weights(self.weights, self.best_state)
            if self.objective_module is not None:
                self.best_objective_state = copy.deepcopy(self.objective_module.state_dict())
                if self.objective_weights is not None:
                    save_weights(self.objective_weights, self.best_objective_state)
        else:
            self.bad_evals += 1
        if self.cfg.patience and self.bad_evals >= self.cfg.patience:
            self.stopped_early = True
        record = {
            "step": self.step,
            "train_loss": self._loss_sum / max(self._loss_count, 1),
            "val_nll": val_nll,
            **({} if self.last_val_bpd is None else {"val_bpd": self.last_val_bpd}),
            "lr": self.schedule.lr_at(self.step),
            "seconds": round(self.elapsed, 3),
            "best_val_nll": self.best_val_nll,
            "nan_total": self.nan_total,
        }
        for name, total in self._term_sums.items():
            record[f"train_{name}"] = total / max(self._loss_count, 1)
        self._loss_sum, self._loss_count = 0.0, 0
        self._term_sums = {}
        self.nan_streak = 0
        if self.metrics is not None:
            self.metrics.append(record)
        self.save()
        self._last_good = self._snapshot()
        return record

    def fit(self, progress: bool = True) -> FitOutcome:
        """Train up to ``total_steps`` (or early stopping), then restore the best weights.

        Raises:
            NonFiniteLoss: when a non-finite loss stops training.
        """
        self.schedule.total_steps = self.total_steps
        self.model.train()
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not progress,
            unit="step",
            dynamic_ncols=True,
            mininterval=0.1 if sys.stderr.isatty() else 2.0,  # fewer lines in a log file
            file=sys.stderr,
        )
        postfix: dict[str, str] = {}
        log = self.log
        if progress:  # print messages above the bar, not through it
            self.log = lambda msg: bar.write(msg, file=sys.stderr)
        try:
            while self.step < self.total_steps and not self.stopped_early:
                start = time.perf_counter()
                try:
                    loss = self.train_step(self.stream.next().to(self.device))
                except SolverError as e:
                    raise self._solver_failed(e) from None
                self.step += 1
                if loss is not None:
                    self._loss_sum += loss
                    self._loss_count += 1
                    for name, value in self.last_terms.items():
                        self._term_sums[name] = self._term_sums.get(name, 0.0) + value
                    postfix["loss"] = f"{loss:.4f}"
                    if "nfe_forward" in self.last_terms:  # a continuous flow's solves
                        nfe = (self.last_terms["nfe_forward"], self.last_terms["nfe_backward"])
                        postfix["nfe"] = f"{nfe[0]:.0f}/{nfe[1]:.0f}"
                if self.step % self.cfg.eval_every == 0 or self.step == self.total_steps:
                    self.elapsed += time.perf_counter() - start
                    start = time.perf_counter()
                    try:
                        val_nll = self.evaluate()
                    except SolverError as e:
                        self.step -= 1  # the step is not validated
                        raise self._solver_failed(e) from None
                    record = self._after_eval(val_nll)
                    if record:
                        postfix["val_nll"] = f"{record['val_nll']:.4f}"
                        if "val_bpd" in record:
                            postfix["val_bpd"] = f"{record['val_bpd']:.4f}"
                self.elapsed += time.perf_counter() - start
                if progress and (self.step % 10 == 0 or self.step == self.total_steps):
                    bar.set_postfix(postfix, refresh=False)
                bar.update(1)
        finally:
            bar.close()
            self.log = log
        if self.cfg.restore_best and self.best_state is not None:
            load_state(self.model, self.best_state, "the best state")
            if self.objective_module is not None and self.best_objective_state is not None:
                load_state(self.objective_module, self.best_objective_state, "the best state")
        elif self.ema is not None and self.ema.state is not None:
            load_state(self.model, self.ema.state, "the average of the weights")
        reason = "early stopping" if self.stopped_early else "completed"
        return FitOutcome(self.step, reason, self.best_step, self.best_val_nll)
