"""The validation of ``flowforge train``: the NLL of the validation rows under given weights,
gathered over the ranks of a multi-process run, and for a learned dequantizer its variational
bound.

A validation row with a non-finite log-likelihood makes the validation NLL non-finite (never
averaged away). With several ranks each computes the log-likelihoods of its slice of the rows and
every rank gets all of them in order (:func:`~flowforge.fit.distributed.gather_rows`), so every
rank sees the same NLL; the bound of a learned dequantizer is computed on rank 0 and broadcast.
Which value is the best, patience and the kept weights are the engine's
:class:`~flowforge.fit.loop.KeepBest`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from flowforge.dequantization import dequantized_log_likelihood
from flowforge.eval.likelihood import (
    NonFiniteLikelihood,
    bits_per_dim,
    check_finite,
    log_likelihoods,
)
from flowforge.fit.distributed import World, broadcast_object, gather_rows
from flowforge.runs import load_state
from flowforge.train.losses import Objective, VariationalDequantization

__all__ = ["Validation"]


class Validation:
    """The validation NLL (nats) of a flow on fixed rows, and their bits/dim for images.

    Args:
        val: ``(N, *event_shape)`` validation rows in the flow's input units (a learned
            dequantizer: the images' integer levels).
        objective: the training objective (a
            :class:`~flowforge.train.losses.VariationalDequantization` is validated by its
            bound, one seeded noise sample per row).
        device: where the rows are evaluated.
        batch_size: rows per evaluation batch.
        seed: the run's seed (the bound's noise is drawn from ``seed + 104729``).
        levels: images: ``K`` levels per value (:attr:`last_bpd` is then set).
        world: this process's place in a multi-process run.
        log: where the note on non-finite rows goes.
        context: ``(N, C)`` the rows' context of a conditional flow (validated as
            ``log p(x | c)``), or ``None``.

    Attributes:
        last_bpd: the bits/dim of the last :meth:`nll` (``None``: not images, or non-finite).
    """

    def __init__(
        self,
        val: Tensor,
        objective: Objective,
        device: torch.device,
        *,
        batch_size: int,
        seed: int,
        levels: int | None,
        world: World,
        log: Callable[[str], None],
        context: Tensor | None = None,
    ) -> None:
        if context is not None and context.shape[0] != val.shape[0]:
            raise ValueError(
                f"expected a validation context of {val.shape[0]} rows, got {tuple(context.shape)}"
            )
        self.val, self.objective, self.device = val, objective, device
        self.context = context
        self.batch_size, self.seed, self.levels, self.world = batch_size, seed, levels, world
        self.log = log
        self.last_bpd: float | None = None

    def nll(self, model: nn.Module, weights: dict[str, Tensor] | None, step: int) -> float:
        """The validation NLL of ``model`` with ``weights`` loaded for the evaluation (``None``:
        its own); its weights are put back. Any non-finite row makes the result NaN (with a
        note naming ``step``)."""
        raw = copy.deepcopy(model.state_dict()) if weights is not None else None
        try:
            if weights is not None:
                load_state(model, weights, "the average of the weights")
            ll = self._log_likelihoods(model)
        finally:
            if raw is not None:
                load_state(model, raw, "the current weights")
        finite = bool(torch.isfinite(ll).all()) and ll.numel() > 0
        if not finite:
            try:
                check_finite(ll, "validation log-likelihood")
            except NonFiniteLikelihood as e:
                self.log(f"step {step}: {e}")
        nll = float(-ll.mean()) if finite else math.nan
        self.last_bpd = None
        if self.levels is not None and finite:
            dim = math.prod(self.val.shape[1:])
            self.last_bpd = float(bits_per_dim(ll, dim, self.levels).mean())
        return nll

    def _log_likelihoods(self, model: nn.Module) -> Tensor:
        """``(N,)`` validation log-likelihoods of ``u`` (a learned dequantizer: its bound)."""
        if not isinstance(self.objective, VariationalDequantization):
            mine = torch.tensor_split(self.val, self.world.size)[self.world.rank]
            context = self.context
            if context is not None:
                context = torch.tensor_split(context, self.world.size)[self.world.rank]
            ll = log_likelihoods(model, mine, self.batch_size, self.device, context)
            return gather_rows(ll, self.world)  # every rank: all rows, in order
        if not self.world.is_main:
            return broadcast_object(torch.empty(0), self.world)
        return broadcast_object(self._bound_log_likelihoods(model), self.world)

    def _bound_log_likelihoods(self, model: nn.Module) -> Tensor:
        assert isinstance(self.objective, VariationalDequantization)
        deq = self.objective.dequantizer
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.seed + 104_729)  # the same noise at every evaluation
            try:
                res = dequantized_log_likelihood(
                    model, deq, self.val.to(self.device), 1, self.batch_size, context=self.context
                )
            except FloatingPointError:
                return torch.full((self.val.shape[0],), math.nan, dtype=torch.float64)
        return res.bound + deq.dim * math.log(deq.levels)  # E_q[log p(u) - log q(e | v)]
