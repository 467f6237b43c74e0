"""A dataset's per-example context: batched with its rows, given to the objective, the
validation and the test summary (a conditional flow trained by the engine)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

import flowforge as ff
from flowforge.data import DataError, Dataset
from flowforge.eval.summary import split_summary
from flowforge.train.batches import TrainStream
from flowforge.train.config import TrainConfig
from flowforge.train.loop import Trainer
from flowforge.train.losses import Loss, MaximumLikelihood
from trainers import CPU, quiet_trainer


def _tag(x: Tensor) -> Tensor:
    """A context that is a known function of its row: ``(N, 2) -> (N, 3)``."""
    return torch.cat([x, x.sum(-1, keepdim=True)], dim=-1) * 10 + 1


def _conditional_set(n: int = 50) -> Dataset:
    """Rows ``x ~ N(c, 0.1^2)`` whose context ``c`` differs per row, in every split."""
    g = torch.Generator().manual_seed(0)
    rows = {}
    context = {}
    for split, size in (("train", n), ("val", 20), ("test", 20)):
        c = torch.randn(size, 2, generator=g) * 3
        rows[split] = c + 0.1 * torch.randn(size, 2, generator=g)
        context[split] = c
    return Dataset(
        "cond", "tabular", (2,), rows["train"], rows["val"], rows["test"], context=context
    )


def test_epoch_batches_carry_each_rows_own_context() -> None:
    x = torch.randn(23, 2, generator=torch.Generator().manual_seed(1))
    ds = Dataset(
        "d",
        "tabular",
        (2,),
        x,
        x[:3],
        x[:4],
        context={"train": _tag(x), "val": _tag(x[:3]), "test": _tag(x[:4])},
    )
    seen = []
    for rows, c in ds.iter_epoch_rows(5, torch.Generator().manual_seed(2)):
        assert c is not None and torch.equal(c, _tag(rows))  # aligned with its own rows
        seen.append(rows)
    order = torch.cat(seen)
    assert not torch.equal(order, x)  # shuffled, so alignment is not by position
    plain = torch.cat(list(ds.iter_epoch(5, torch.Generator().manual_seed(2))))
    assert torch.equal(order, plain)  # the same order as the context-free epochs

    stream = TrainStream(ds, 4, seed=3)
    for _ in range(9):  # across an epoch boundary (23 rows, 6 batches an epoch)
        rows, c = stream.next_batch()
        assert c is not None and torch.equal(c, _tag(rows))
    state = stream.state_dict()
    expected = stream.next_batch()
    resumed = TrainStream(ds, 4, seed=3)
    resumed.load_state_dict(state)
    got = resumed.next_batch()
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])  # type: ignore[arg-type]


def test_a_context_of_the_wrong_rows_is_one_clear_error() -> None:
    x = torch.zeros(5, 2)
    with pytest.raises(DataError, match=r"expected a val context of shape \(3, C\)"):
        Dataset(
            "d", "tabular", (2,), x, x[:3], x[:2], context={"train": x, "val": x[:2], "test": x[:2]}
        )
    with pytest.raises(DataError, match="one tensor per split"):
        Dataset("d", "tabular", (2,), x, x[:3], x[:2], context={"train": x})


class _Spy:
    """Maximum likelihood that records the (batch, context) pairs it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[Tensor, Tensor | None]] = []

    def __call__(self, model: nn.Module, batch: Tensor, context: Tensor | None = None) -> Loss:
        self.calls.append((batch.clone(), None if context is None else context.clone()))
        return MaximumLikelihood()(model, batch, context)


def _trainer(ds: Dataset, objective: object, steps: int = 60) -> Trainer:
    cfg = TrainConfig.from_layers(
        {"steps": steps, "eval_every": 20, "batch_size": 8, "lr": 5e-3, "clip_grad": 0.0}
    )
    torch.manual_seed(0)
    flow = ff.flows.MAF(features=2, context=2, transforms=2, hidden=(16,))
    return quiet_trainer(
        flow, ds, cfg, steps, objective=objective, val_context=ds.context_of("val")
    )


def test_the_fit_loop_trains_and_validates_given_each_rows_context() -> None:
    ds = _conditional_set()
    spy = _Spy()
    trainer = _trainer(ds, spy)
    trainer.fit(progress=False)
    assert len(spy.calls) == 60
    for batch, c in spy.calls:  # every training batch came with its own rows' context
        assert c is not None and (batch - c).abs().max() < 0.6
    flow = trainer.model
    with torch.no_grad():
        given = -flow.log_prob(ds.val, ds.context_of("val")).mean()
        shuffled = -flow.log_prob(ds.val, ds.context_of("val").flip(0)).mean()
    assert math.isclose(trainer.best_val_nll, float(given), rel_tol=1e-5)
    assert float(given) < float(shuffled) - 1  # it learned to use the context: x ~ N(c, 0.01)
    # the test summary is given the test rows' context
    summary = split_summary(flow, ds, "test", seed=0, batch_size=7)
    with torch.no_grad():
        direct = -flow.log_prob(ds.test, ds.context_of("test")).double().mean()
    assert math.isclose(summary.nll, float(direct), rel_tol=1e-5)


def test_a_two_argument_objective_still_trains_unconditional_sets() -> None:
    x = torch.randn(40, 2)
    ds = Dataset("plain", "tabular", (2,), x, x[:8], x[:8])
    cfg = TrainConfig.from_layers({"steps": 3, "eval_every": 3, "batch_size": 8})
    flow = ff.flows.MAF(features=2, transforms=1, hidden=(8,))
    seen = []

    def objective(model: nn.Module, batch: Tensor) -> Loss:
        seen.append(batch.shape[0])
        return Loss(-model.log_prob(batch).mean())  # type: ignore[operator]

    Trainer(
        flow, TrainStream(ds, 8, 0), ds.val, cfg, 3, CPU, log=lambda m: None, objective=objective
    ).fit(progress=False)
    assert seen == [8, 8, 8]
