"""Training batches and evaluation splits, in the units the trained flow takes.

The trained flow (see :mod:`flowforge.runs.recipe`) reads toy and on-disk tabular rows as they
are, user/scikit-learn tabular rows in their original units (the flow standardises them itself)
and images in their own shape ``(N, C, H, W)`` as uniformly dequantized values ``u`` in
``[0, 1)``, the noise drawn once per batch (never again inside the flow). This module turns a
:class:`flowforge.data.Dataset` into exactly that, with random state that a checkpoint can save,
so a resumed run draws the same batches as an uninterrupted one. A run that learns its
dequantization (:class:`~flowforge.train.losses.VariationalDequantization`) gets the images'
integer levels instead (``raw=True``, as floats): its objective draws the noise itself.

Standardised tables train in standardised units: the data were standardised in float64 and
only then cast to float32 (:mod:`flowforge.data.user`), and casting rows back to their own
units in float32 would lose the detail of a column with a large offset (near 1.7e9, float32
values are 128 apart). :func:`training_flow` gives the Trainer a view of the run's flow whose
leading ``Standardize`` takes such rows as they are (an identity with the same log-Jacobian,
``-sum(log std)``, and the same buffers): the same parameters and state-dict keys, the same
log-density, in nats of the data's own units. ``TrainStream(..., standardized=True)`` and
``prepare_split(..., standardized=True)`` give it the rows.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from flowforge.data.base import QUANTIZED_KINDS, Dataset
from flowforge.eval.splits import _standardized, level_split, model_input, prepare_split
from flowforge.train.config import ConfigError
from flowforge.transforms.standardize import standardized_view

__all__ = [
    "TrainStream",
    "level_split",
    "model_input",
    "prepare_split",
    "standardized_view",
    "steps_per_epoch",
    "training_flow",
]


def training_flow(flow: torch.nn.Module, ds: Dataset) -> torch.nn.Module:
    """The module a Trainer fits for ``flow`` on ``ds``: ``flow`` itself, or for standardised
    tables a view that takes standardised rows (:func:`standardized_view`, see the module
    docstring).

    The view shares every parameter and buffer with ``flow`` and has the same state-dict keys,
    so weights and checkpoints written from one load into the other.

    Raises:
        ConfigError: a standardised table and a flow that does not start with ``Standardize``.
    """
    if ds.standardizer is None or ds.kind == "image":
        return flow
    view = standardized_view(flow)
    if view is None:
        raise ConfigError(
            f"dataset {ds.name!r} is standardised: its flow must start with a Standardize "
            "pre-transform (build it with flowforge.runs.build_flow)"
        )
    return view


def steps_per_epoch(ds: Dataset, batch_size: int) -> int:
    """Batches in one pass over the training rows.

    Raises:
        ConfigError: for 2-D toy data, which has no fixed training set.
    """
    if ds.train is None:
        raise ConfigError(
            f"dataset {ds.name!r} samples fresh training data and has no epochs; use --steps"
        )
    return math.ceil(ds.train.shape[0] / batch_size)


class TrainStream:
    """An endless stream of training batches whose position can be saved and restored.

    Toy sets draw fresh samples; other sets go through the training rows in a new random order
    each epoch (the order of epoch ``e`` depends only on ``seed`` and ``e``).

    Args:
        ds: the dataset.
        batch_size: rows per batch (the last batch of an epoch may be smaller).
        seed: seed of the sampling and of the dequantization noise.
        raw: images: yield the integer levels as floats, not dequantized values.
        standardized: standardised tables: yield the rows as stored (standardised in float64,
            then cast), for :func:`training_flow`; otherwise in the data's own units.
        noise: images: the standard deviation of Gaussian noise added to the dequantized
            values (noise augmentation; from the same generator as the dequantization).
        label_dropout: sets with a context (a one-hot class): the probability that a batch
            row's context is replaced by the null, all-zero context (TarFlow's label dropout,
            which trains the unconditional density that class guidance extrapolates from);
            drawn from the dequantization's generator, after the batch's noise.

    Example:
        >>> from flowforge.data import load_dataset
        >>> from flowforge.data.sklearn_sets import class_context
        >>> ds = class_context(load_dataset("digits"))
        >>> x, c = TrainStream(ds, 256, seed=0, label_dropout=0.5).next_batch()
        >>> x.shape, c.shape, 0.3 < (c.sum(-1) == 0).float().mean().item() < 0.7
        (torch.Size([256, 1, 8, 8]), torch.Size([256, 10]), True)
    """

    def __init__(
        self,
        ds: Dataset,
        batch_size: int,
        seed: int,
        raw: bool = False,
        standardized: bool = False,
        noise: float = 0.0,
        label_dropout: float = 0.0,
    ) -> None:
        if not 0 <= label_dropout < 1:
            raise ConfigError(f"expected label_dropout in [0, 1), got {label_dropout!r}")
        self.ds = ds
        self.label_dropout = float(label_dropout)
        self.noise_std = float(noise)
        self.raw = raw
        self.standardized = _standardized(ds, standardized)
        self.batch_size = batch_size
        self.seed = seed
        self.draws = torch.Generator().manual_seed(seed)
        self.noise = torch.Generator().manual_seed(seed + 1)
        self.epoch = 0
        self.position = 0  # batches already taken from the current epoch
        self._epoch_iter: Iterator[tuple[Tensor, Tensor | None]] | None = None

    def _epoch_batches(self) -> Iterator[tuple[Tensor, Tensor | None]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return self.ds.iter_epoch_rows(self.batch_size, g)

    def next(self) -> Tensor:
        """The next ``(B, *event_shape)`` batch in the flow's input units (its context, if
        the set has one, dropped: :meth:`next_batch` keeps it)."""
        return self.next_batch()[0]

    def next_batch(self) -> tuple[Tensor, Tensor | None]:
        """The next batch in the flow's input units and its rows' ``(B, C)`` context
        (:attr:`flowforge.data.Dataset.context`; ``None`` when the set has none)."""
        context = None
        if self.ds.train is None:
            x = self.ds.sample_train(self.batch_size, self.draws)
        else:
            while True:
                if self._epoch_iter is None:
                    it = self._epoch_batches()
                    self._epoch_iter = itertools.islice(it, self.position, None)
                batch = next(self._epoch_iter, None)
                if batch is not None:
                    x, context = batch
                    break
                self.epoch, self.position, self._epoch_iter = self.epoch + 1, 0, None
            self.position += 1
        if self.raw and self.ds.kind in QUANTIZED_KINDS:
            x = x.to(torch.float32)
        elif not self.standardized:
            x = model_input(self.ds, x, self.noise)
            if self.noise_std > 0 and self.ds.kind == "image":
                x = x + self.noise_std * torch.randn(x.shape, generator=self.noise).to(x)
        if context is not None and self.label_dropout > 0:  # after the dequantization's draws
            keep = torch.rand(context.shape[0], generator=self.noise) >= self.label_dropout
            context = context * keep.unsqueeze(-1).to(context)  # (B, C), dropped rows all zero
        return x, context

    def state_dict(self) -> dict[str, Any]:
        """Generator states and the position in the epoch."""
        return {
            "draws": self.draws.get_state(),
            "noise": self.noise.get_state(),
            "epoch": self.epoch,
            "position": self.position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.draws.set_state(state["draws"])
        self.noise.set_state(state["noise"])
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._epoch_iter = None
