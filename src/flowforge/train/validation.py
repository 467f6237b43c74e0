"""Validation in a :class:`~flowforge.train.loop.Trainer`: the NLL of the validation rows
under the evaluated weights (the moving average when there is one), gathered over the ranks of a
multi-process run, and for a learned dequantizer its variational bound; and the validation of
the starting weights (step 0), a candidate for the best.

A validation row with a non-finite log-likelihood makes the validation NLL non-finite (never
averaged away). With several ranks each computes the log-likelihoods of its slice of the rows and
every rank gets all of them in order (:func:`~flowforge.fit.distributed.gather_rows`), so every
rank sees the same NLL; the bound of a learned dequantizer is computed on rank 0 and broadcast.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from torch import Tensor

from flowforge.dequantization import dequantized_log_likelihood
from flowforge.eval.likelihood import (
    NonFiniteLikelihood,
    bits_per_dim,
    check_finite,
    log_likelihoods,
)
from flowforge.fit.distributed import World, broadcast_object, gather_rows
from flowforge.runs import load_state, save_weights
from flowforge.train.losses import VariationalDequantization
from flowforge.train.state import TrainerState
from flowforge.transforms.continuous import SolverError

__all__ = ["TrainerValidation"]


class TrainerValidation(TrainerState):
    """The validation of a trainer (the base of ``Trainer``)."""

    val: Tensor
    levels: int | None
    last_val_bpd: float | None
    device: torch.device
    world: World
    weights: Path | None
    objective_weights: Path | None

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

    def _validate_start(self) -> None:
        """Validate the starting weights (step 0), a candidate for the best: a flow that starts
        at a fit (a table's whitened Gaussian) then ends no worse on validation than its start.
        Random-number neutral; no metrics record (there is no training loss yet)."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            try:
                val_nll = self.evaluate()
            except SolverError:
                return
        if math.isfinite(val_nll) and val_nll < self.best_val_nll:
            self._keep_best(val_nll)

    def _keep_best(self, val_nll: float) -> None:
        """The evaluated weights of this step are the best so far: keep them (and write the
        weights files)."""
        self.best_val_nll, self.best_step, self.bad_evals = val_nll, self.step, 0
        self.best_state = copy.deepcopy(self.evaluated_state())
        if self.writer is not None:
            self.writer.write_weights(self.best_state)
        elif self.weights is not None:
            save_weights(self.weights, self.best_state)
        if self.objective_module is not None:
            self.best_objective_state = copy.deepcopy(self.objective_module.state_dict())
            if self.objective_weights is not None and self.writer is not None:
                self.writer.write_weights(self.best_objective_state, self.objective_weights.name)
            elif self.objective_weights is not None:
                save_weights(self.objective_weights, self.best_objective_state)

    def _val_log_likelihoods(self) -> Tensor:
        """``(N,)`` validation log-likelihoods of ``u`` (a learned dequantizer: its bound)."""
        if not isinstance(self.objective, VariationalDequantization):
            mine = torch.tensor_split(self.val, self.world.size)[self.world.rank]
            ll = log_likelihoods(self.model, mine, self.cfg.eval_batch_size, self.device)
            return gather_rows(ll, self.world)  # every rank: all rows, in order
        if not self.world.is_main:
            return broadcast_object(torch.empty(0), self.world)
        return broadcast_object(self._bound_log_likelihoods(), self.world)

    def _bound_log_likelihoods(self) -> Tensor:
        assert isinstance(self.objective, VariationalDequantization)
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
