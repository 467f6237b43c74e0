"""The fit loop: an objective (maximum likelihood by default) with validation, early stopping,
checkpoints and NaN recovery.

The loop minimises whatever :class:`~flowforge.train.losses.Objective` it is given and logs
the objective's extra terms; validation is always the NLL of the validation rows (and their
bits/dim for images). With ``ema_decay > 0`` the loop keeps a moving average of the weights
(:mod:`flowforge.fit.ema`): the average is what is validated, kept as the best weights, written to the
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

With ``restore_best``, non-image data are validated once before the first step too: the
starting weights are a candidate best (no metrics record). Every ``eval_every`` steps (and at
the last step) the loop computes the validation NLL, appends a
record to ``metrics.jsonl``, keeps the best weights, and writes a checkpoint holding everything
needed to continue exactly (model, optimizer, schedule, batch stream, random states, best
weights, counters). A non-finite loss or gradient never reaches the weights: the batch is
skipped, and either training stops (``on_nan="stop"``) or the last good state is restored and the
learning rate lowered (``on_nan="recover"``).

One class and its collaborators: the engine's :class:`~flowforge.fit.loop.Stepper` takes each
step, :class:`~flowforge.fit.loop.KeepBest` keeps the best validated weights and counts
patience, :class:`~flowforge.fit.recovery.Recovery` holds the last good state and the NaN
policy, and :class:`~flowforge.train.validation.Validation` computes the validation NLL. The
checkpoint keeps the key names it has always had (``best_val_nll``, ``best_step``,
``bad_evals``, ``best_state``, ``nan_streak``, ``nan_total``), so older checkpoints resume.
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

from flowforge.fit.distributed import (
    ObjectiveModule,
    World,
    all_sum,
    check_in_sync,
    initialize_from_batch,
    shard,
    wrap_ddp,
)
from flowforge.fit.ema import WeightAverage
from flowforge.fit.loop import KeepBest, Stepper
from flowforge.fit.precision import networks_of, precision_context
from flowforge.fit.progress import Progress
from flowforge.fit.recovery import NonFiniteLoss, Recovery
from flowforge.fit.schedule import LRSchedule
from flowforge.runs import RunError, load_state, save_weights
from flowforge.runs.checkpoint import save_checkpoint
from flowforge.runs.metrics import MetricsLog
from flowforge.runs.writer import RunWriter
from flowforge.train.batches import TrainStream
from flowforge.train.config import ConfigError, TrainConfig
from flowforge.train.losses import Loss, MaximumLikelihood, Objective
from flowforge.train.validation import Validation
from flowforge.transforms.continuous import SolverError

__all__ = ["FitOutcome", "NonFiniteLoss", "Trainer"]


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


def _silent(msg: str) -> None:
    """The log of ranks other than 0."""


def _backward(value: Tensor) -> None:
    try:
        value.backward()
    except AssertionError as e:  # torchdiffeq's checks in an adjoint's backward solve
        raise SolverError(f"the backward (adjoint) ODE solve failed: {e}") from None


#: Checkpoint counters (their names in every checkpoint so far) -> KeepBest's attributes.
_KEEP_COUNTERS = {"best_val_nll": "best", "best_step": "best_step", "bad_evals": "bad"}


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
        val_context: ``(N, C)`` the validation rows' context when the dataset has one
            (:attr:`flowforge.data.Dataset.context`): the flow is then trained and validated
            conditioned on it, each training batch with its rows' context
            (:meth:`~flowforge.train.batches.TrainStream.next_batch`).
        writer: the run directory's writer (:class:`~flowforge.runs.writer.RunWriter`):
            metrics, checkpoints and the best weights (and ``objective_weights``, by its file
            name) are written through it, instead of to the three files above.
        world: this process's place in a multi-process run
            (:mod:`flowforge.fit.distributed`; default: the only process). With several, ``stream`` yields the global batch, this rank trains
            on its slice under DDP, validation is gathered from all ranks and only the files
            given here are written (pass ``None`` for them on ranks other than 0).
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
        world: World | None = None,
        writer: RunWriter | None = None,
        val_context: Tensor | None = None,
    ) -> None:
        self.model, self.stream, self.cfg = model, stream, cfg
        self.total_steps, self.device = total_steps, device
        self.metrics, self.checkpoint, self.weights, self.log = metrics, checkpoint, weights, log
        self.objective: Objective = MaximumLikelihood() if objective is None else objective
        self.objective_module = self.objective if isinstance(self.objective, nn.Module) else None
        self.objective_weights = objective_weights
        self.writer: RunWriter | None = None
        if writer is not None:
            self.attach(writer)
        if cfg.precision != "float32" and not networks_of(model, self.objective_module):
            raise ConfigError(
                f"--precision {cfg.precision} casts MLP, MADE and ConvNet networks; this flow "
                "has none (a CNF's ODE net stays float32: its trace is the log-determinant)"
            )
        self.world = World() if world is None else world
        self._ddp: nn.Module | None = None  # DDP over ObjectiveModule, made at the first step
        if not self.world.is_main:
            self.log = _silent
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        self.params = [p for p in model.parameters() if p.requires_grad]
        if self.objective_module is not None:  # trained jointly (a learned dequantizer)
            self.params += [p for p in self.objective_module.parameters() if p.requires_grad]
        # one fused kernel for every tensor (CPU and CUDA): Glow's ~100 tensors took ~35 ms per
        # step in Adam's per-tensor loop on a CPU, ~1 ms fused (same values to 3e-8)
        fused = bool(self.params) and all(p.device.type in ("cpu", "cuda") for p in self.params)
        self.optimizer = opt_cls(
            self.params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None
        )
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
        self.stepper = Stepper(
            self.optimizer,
            self.schedule,
            params=self.params,
            clip=cfg.clip_grad if cfg.clip_grad > 0 else math.inf,  # the norm is always checked
            ema=self.ema,
            model=model,
            on_non_finite=lambda what, value, step: self._non_finite(
                "gradient" if what == "gradient norm" else what
            ),
            backward=_backward,
        )
        self.keep = KeepBest(self.evaluated_state, patience=cfg.patience, on_best=self._on_best)
        self.recovery = Recovery(
            model,
            self.optimizer,
            self.schedule,
            ema=self.ema,
            extra=self.objective_module,
            on_nan=cfg.on_nan,
            max_recoveries=cfg.max_nan_recoveries,
            lr_factor=cfg.nan_lr_factor,
            log=lambda msg: self.log(msg),  # self.log changes while the progress bar shows
        )
        self.validation = Validation(
            val,
            self.objective,
            device,
            batch_size=cfg.eval_batch_size,
            seed=cfg.seed,
            levels=levels,
            world=self.world,
            log=lambda msg: self.log(msg),
            context=val_context,
        )
        self.best_objective_state: dict[str, Tensor] | None = None
        self.step = 0
        self.elapsed = 0.0
        self.stopped_early = False
        self._loss_sum, self._loss_count = 0.0, 0
        self._term_sums: dict[str, float] = {}
        self.last_terms: dict[str, float] = {}
        self.recovery.take(self.step)

    # -- the kept best (the engine's KeepBest) ------------------------------------------------

    @property
    def best_val_nll(self) -> float:
        """The best validation NLL so far (``inf`` before any)."""
        return self.keep.best

    @property
    def best_step(self) -> int:
        """The step of :attr:`best_val_nll` (0: the starting weights, or none yet)."""
        return self.keep.best_step

    @property
    def best_state(self) -> dict[str, Tensor] | None:
        """The weights of :attr:`best_val_nll` (``None`` before any)."""
        return self.keep.weights

    @property
    def bad_evals(self) -> int:
        """Validations since the best one."""
        return self.keep.bad

    @property
    def val(self) -> Tensor:
        """The validation rows (:attr:`validation`'s)."""
        return self.validation.val

    @val.setter
    def val(self, rows: Tensor) -> None:
        self.validation.val = rows

    @property
    def last_val_bpd(self) -> float | None:
        """The bits/dim of the last validation (images only)."""
        return self.validation.last_bpd

    def attach(self, writer: RunWriter) -> None:
        """Write the metrics, checkpoints and best weights through ``writer`` from now on (a
        run's writer is attached once every check of the trainer's options has passed, so a
        refused run leaves no folder)."""
        self.writer = writer
        self.metrics = writer.metrics
        self.checkpoint, self.weights = writer.files.checkpoint, writer.files.weights

    # -- training -----------------------------------------------------------------------------

    def _loss(self, x: Tensor, context: Tensor | None = None) -> Loss:
        """The objective on batch ``x`` (given its ``context``, if any), checked: a
        :class:`Loss` with a scalar value."""
        if context is None:  # an objective of (model, batch) serves unconditional runs
            out = self.objective(self.model, x)
        else:
            out = self.objective(self.model, x, context)
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

    def train_step(self, x: Tensor, context: Tensor | None = None) -> float | None:
        """One optimizer step on batch ``x`` (with its rows' ``(B, C)`` context, if any);
        returns the loss, or ``None`` if it was skipped.

        The objective's extra terms of the step are left in :attr:`last_terms` (empty when the
        step was skipped). The step itself (clipping, the schedule, the moving average, the
        non-finite guard) is the engine's :class:`~flowforge.fit.loop.Stepper`.
        """
        self.last_terms = {}
        terms: dict[str, Tensor] = {}

        def loss() -> tuple[Tensor, Tensor]:
            with precision_context(
                self.cfg.precision, self.device, self.model, self.objective_module
            ):
                value, step_terms, loss = self._step_loss(x, context)
            terms.update(step_terms)
            return value, loss  # the loss is summed over the ranks: the same on all of them

        done = self.stepper.step(self.step, loss)
        if done is None:
            return None
        self.last_terms = {name: float(t.detach()) for name, t in terms.items()}
        return float(done)

    def _step_loss(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """``(what to backpropagate, the terms, the loss)`` of a step on the global batch ``x``.

        Several ranks: this rank's weighted slice through DDP; the loss and the terms are the
        global batch's, summed over the ranks.
        """
        if not self.world.active:
            out = self._loss(x, context)
            return out.value, dict(out.terms), out.value.detach()
        if self._ddp is None:
            self._prepare_ranks(x, context)
        assert self._ddp is not None
        local, weight = shard(x, self.world)
        local_context = None if context is None else shard(context, self.world)[0]
        value, terms = self._ddp(local, weight, local_context)
        packed = torch.stack([value.detach().float(), *(t.float() for t in terms.values())])
        total = all_sum(packed, self.world) / self.world.size
        return value, dict(zip(terms, total[1:], strict=True)), total[0]

    def _prepare_ranks(self, x: Tensor, context: Tensor | None = None) -> None:
        """Before the first step of several ranks: ActNorm initialised on the global batch ``x``,
        then DDP (which broadcasts rank 0's parameters and buffers), checked in sync."""
        trained = nn.ModuleList([self.model, *filter(None, [self.objective_module])])
        initialize_from_batch(trained, lambda: self._loss(x, context))
        self._ddp = wrap_ddp(
            ObjectiveModule(self.model, self.objective_module, self._loss), self.device
        )
        check_in_sync(list(trained), self.world, f"step {self.step}, after initialisation")
        if self.world.rank > 0:  # the objective's own noise: its own stream on every rank
            torch.manual_seed(self.cfg.seed + 7_919 * self.world.rank + 104_729 * self.step)

    def _next_batch(self) -> tuple[Tensor, Tensor | None]:
        """The next training batch and its rows' context (``None``: the set has none), on the
        device. A set without a context is read through ``stream.next()``."""
        if self.stream.ds.context is None:
            return self.stream.next().to(self.device), None
        x, context = self.stream.next_batch()
        assert context is not None
        return x.to(self.device), context.to(self.device)

    def _solver_failed(self, e: SolverError) -> SolverError:
        """The error that stops training on a failed ODE solve (one line)."""
        return SolverError(
            f"step {self.step + 1}: {e}; training stopped; the last good checkpoint (step "
            f"{self.recovery.step}) is kept and the weights file holds the best validated weights"
        )

    def _non_finite(self, what: str) -> None:
        self.recovery.recover(f"step {self.step + 1}: non-finite {what}", self.step)

    # -- validation ---------------------------------------------------------------------------

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
        weights = self.evaluated_state() if swap else None
        return self.validation.nll(self.model, weights, self.step)

    def _validate_start(self) -> None:
        """Validate the starting weights (step 0), a candidate for the best: a flow that starts
        at a fit (a table's whitened Gaussian) then ends no worse on validation than its start.
        Random-number neutral; no metrics record (there is no training loss yet)."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            try:
                val_nll = self.evaluate()
            except SolverError:
                return
        self.keep.start(val_nll)

    def _on_best(self, step: int, value: float, weights: dict[str, Tensor]) -> None:
        """The evaluated weights of ``step`` are the best so far (kept by :attr:`keep`): write
        them, and keep (and write) the objective's own state."""
        if self.writer is not None:
            self.writer.write_weights(weights)
        elif self.weights is not None:
            save_weights(self.weights, weights)
        if self.objective_module is not None:
            self.best_objective_state = copy.deepcopy(self.objective_module.state_dict())
            if self.objective_weights is not None and self.writer is not None:
                self.writer.write_weights(self.best_objective_state, self.objective_weights.name)
            elif self.objective_weights is not None:
                save_weights(self.objective_weights, self.best_objective_state)

    def _after_eval(self, val_nll: float) -> dict[str, Any]:
        if not math.isfinite(val_nll):
            self._non_finite("validation NLL")
            return {}
        self.schedule.observe(val_nll)
        self.keep.observe(self.step, val_nll)
        if self.keep.stop:
            self.stopped_early = True
        record = {
            "step": self.step,
            "train_loss": self._loss_sum / max(self._loss_count, 1),
            "val_nll": val_nll,
            **({} if self.last_val_bpd is None else {"val_bpd": self.last_val_bpd}),
            "lr": self.schedule.lr_at(self.step),
            "seconds": round(self.elapsed, 3),
            "best_val_nll": self.best_val_nll,
            "nan_total": self.recovery.total,
        }
        for name, total in self._term_sums.items():
            record[f"train_{name}"] = total / max(self._loss_count, 1)
        self._loss_sum, self._loss_count = 0.0, 0
        self._term_sums = {}
        self.recovery.streak = 0
        if self.metrics is not None:
            self.metrics.append(record)
        self.save()
        self.recovery.take(self.step)
        return record

    # -- checkpoint ---------------------------------------------------------------------------

    def _objective_state(self) -> dict[str, Tensor] | None:
        """The objective's own state (``None`` unless it is an ``nn.Module``)."""
        module = self.objective_module
        return None if module is None else module.state_dict()

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly where this one is (the keys of
        every checkpoint written so far)."""
        keep = self.keep.state_dict()
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "stream": self.stream.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "best_state": keep["weights"],
            "ema": None if self.ema is None else self.ema.state_dict(),
            "objective": self._objective_state(),
            "best_objective_state": self.best_objective_state,
            "counters": {
                "step": self.step,
                **{name: keep[attr] for name, attr in _KEEP_COUNTERS.items()},
                "nan_streak": self.recovery.streak,
                "nan_total": self.recovery.total,
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
        counters = state["counters"]
        keep = {a: counters[n] for n, a in _KEEP_COUNTERS.items() if n in counters}
        self.keep.load_state_dict(keep | {"weights": state["best_state"]})
        self.recovery.streak = counters.get("nan_streak", self.recovery.streak)
        self.recovery.total = counters.get("nan_total", self.recovery.total)
        self.step = counters.get("step", self.step)
        self.elapsed = counters.get("elapsed", self.elapsed)
        self.stopped_early = counters.get("stopped_early", self.stopped_early)
        self.recovery.take(self.step)

    def save(self) -> None:
        """Write the checkpoint file (atomically), if there is one."""
        if self.writer is not None:
            self.writer.write_checkpoint(self.state_dict())
        elif self.checkpoint is not None:
            save_checkpoint(self.checkpoint, self.state_dict())

    def fit(self, progress: bool = True) -> FitOutcome:
        """Train up to ``total_steps`` (or early stopping), then restore the best weights.

        Raises:
            NonFiniteLoss: when a non-finite loss stops training.
        """
        self.schedule.total_steps = self.total_steps
        self.model.train()
        bar = Progress(self.total_steps, initial=self.step, enabled=progress and self.world.is_main)
        postfix: dict[str, str] = {}
        log = self.log
        if bar.bar is not None:  # print messages above the bar, not through it (rank 0 only:
            self.log = bar.write  # the other ranks' log stays silent)
        if self.step == 0 and self.cfg.restore_best and self.levels is None:
            self._validate_start()
        try:
            while self.step < self.total_steps and not self.stopped_early:
                start = time.perf_counter()
                try:
                    x, context = self._next_batch()
                    loss = self.train_step(x) if context is None else self.train_step(x, context)
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
                bar.show(self.step, postfix)
        finally:
            bar.close()
            self.log = log
        check_in_sync([self.model, *filter(None, [self.objective_module])], self.world, "the end")
        if self.cfg.restore_best and self.keep.weights is not None:
            load_state(self.model, self.keep.weights, "the best state")
            if self.objective_module is not None and self.best_objective_state is not None:
                load_state(self.objective_module, self.best_objective_state, "the best state")
        elif self.ema is not None and self.ema.state is not None:
            load_state(self.model, self.ema.state, "the average of the weights")
        reason = "early stopping" if self.stopped_early else "completed"
        return FitOutcome(self.step, reason, self.keep.best_step, self.keep.best)
