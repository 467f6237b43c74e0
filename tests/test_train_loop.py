"""The fit loop: exact resume, NaN recovery, early stopping, schedules, batch streams."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import flowforge as ff
from flowforge.data import Dataset, load_dataset
from flowforge.fit.schedule import LRSchedule
from flowforge.train.batches import TrainStream
from flowforge.train.checkpoint import load_checkpoint
from flowforge.train.config import TrainConfig
from flowforge.train.loop import NonFiniteLoss, Trainer
from flowforge.train.metrics import MetricsLog
from trainers import quiet_trainer, run_files


def _setup(tmp_path: Path, total: int = 40, **options: object) -> Trainer:
    cfg = TrainConfig.from_layers(
        {"steps": total, "eval_every": 10, "batch_size": 64, "n_val": 256, "n_test": 256},
        dict(options),
    )
    ds = load_dataset("8gaussians", seed=1, n_val=cfg.n_val, n_test=cfg.n_test)
    torch.manual_seed(0)
    flow = ff.flows.NSF(features=2, transforms=2, hidden=(16, 16), bins=4)
    return quiet_trainer(flow, ds, cfg, total, **run_files(tmp_path))


class _Stop(Exception):
    pass


def test_resume_from_a_checkpoint_is_exact(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight = _setup(tmp_path / "a")
    straight.fit(progress=False)

    interrupted = _setup(tmp_path / "b")
    draw = interrupted.stream.next
    calls = iter(range(10_000))

    def next_or_die() -> Tensor:
        if next(calls) == 25:  # killed between the checkpoints of steps 20 and 30
            raise _Stop
        return draw()

    interrupted.stream.next = next_or_die  # type: ignore[method-assign]
    with pytest.raises(_Stop):
        interrupted.fit(progress=False)

    resumed = _setup(tmp_path / "b")
    resumed.load_state_dict(load_checkpoint(tmp_path / "b" / "checkpoint.safetensors"))
    assert resumed.step == 20
    resumed.metrics.truncate(resumed.step)  # type: ignore[union-attr]
    resumed.fit(progress=False)
    for (k, v), w in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(v, w), k
    assert resumed.best_val_nll == straight.best_val_nll
    a = MetricsLog(tmp_path / "a" / "metrics.jsonl").read()
    b = MetricsLog(tmp_path / "b" / "metrics.jsonl").read()
    assert [(r["step"], r["val_nll"]) for r in a] == [(r["step"], r["val_nll"]) for r in b]


class _Flaky(nn.Module):
    """A flow whose training log-density is NaN on chosen calls."""

    def __init__(self, flow: nn.Module, bad_calls: set[int]) -> None:
        super().__init__()
        self.flow, self.bad_calls, self.calls = flow, bad_calls, 0

    def log_prob(self, x: Tensor) -> Tensor:
        lp = self.flow.log_prob(x)  # type: ignore[operator]
        if self.training:
            self.calls += 1
            if self.calls in self.bad_calls:
                return lp * math.nan
        return lp


def _flaky(trainer: Trainer, bad_calls: set[int]) -> Trainer:
    model = _Flaky(trainer.model, bad_calls)
    trainer.model = model
    trainer.recovery.take(trainer.step)
    return trainer


def test_non_finite_loss_recovers_with_a_lower_rate(tmp_path: Path) -> None:
    trainer = _flaky(_setup(tmp_path, on_nan="recover"), {15})
    messages: list[str] = []
    trainer.log = messages.append
    outcome = trainer.fit(progress=False)
    assert outcome.step == 40 and trainer.recovery.total == 1
    assert trainer.schedule.scale == 0.5
    assert (
        "step 15: non-finite loss: skipped the batch, restored the state of step 10" in messages[0]
    )
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    records = MetricsLog(tmp_path / "metrics.jsonl").read()
    assert [r["nan_total"] for r in records] == [0, 1, 1, 1]


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path: Path) -> None:
    trainer = _flaky(_setup(tmp_path, on_nan="stop"), {25})
    with pytest.raises(NonFiniteLoss, match=r"step 25: non-finite loss; training stopped"):
        trainer.fit(progress=False)
    assert load_checkpoint(tmp_path / "checkpoint.safetensors")["counters"]["step"] == 20


def test_too_many_recoveries_stop(tmp_path: Path) -> None:
    trainer = _flaky(_setup(tmp_path, max_nan_recoveries=2), {3, 4, 5})
    with pytest.raises(NonFiniteLoss, match="too many in a row"):
        trainer.fit(progress=False)


def test_early_stopping_restores_the_best_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = _setup(tmp_path, total=100, patience=2)
    values = iter([9.0, 3.0, 2.0, 2.5, 2.6, 2.7, 2.8])  # 9.0: the start (step 0), worse
    monkeypatch.setattr(trainer, "evaluate", lambda: next(values))
    outcome = trainer.fit(progress=False)
    assert (outcome.reason, outcome.step, outcome.best_step) == ("early stopping", 40, 20)
    assert trainer.best_state is not None
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, trainer.best_state[k]), k


def test_schedules() -> None:
    s = LRSchedule("plateau", lr=1.0, total_steps=10, factor=0.5, patience=1)
    for v in (3.0, 2.0, 2.5, 2.5):
        s.observe(v)
    assert s.lr_at(5) == 0.5
    s.cut(0.1)
    t = LRSchedule("plateau", lr=1.0, total_steps=10)
    t.load_state_dict(s.state_dict())
    assert t.lr_at(0) == pytest.approx(0.05)
    c = LRSchedule("cosine", lr=1.0, total_steps=100, min_lr=0.1)
    assert c.lr_at(0) == 1.0 and c.lr_at(100) == pytest.approx(0.1) and c.lr_at(500) == c.lr_at(100)
    assert LRSchedule("constant", lr=0.3, total_steps=5).lr_at(4) == 0.3


def test_stream_over_training_rows_resumes_mid_epoch() -> None:
    rows = torch.arange(20.0).reshape(10, 2)
    ds = Dataset("rows", "tabular", (2,), rows, rows[:2], rows[:2])
    a = TrainStream(ds, batch_size=3, seed=4)
    for _ in range(5):  # into the second epoch (4 batches per epoch)
        a.next()
    state = a.state_dict()
    b = TrainStream(ds, batch_size=3, seed=4)
    b.load_state_dict(state)
    for _ in range(6):
        assert torch.equal(a.next(), b.next())
    c = TrainStream(ds, 3, 4)
    epoch = torch.cat([c.next() for _ in range(4)])  # (10, 2): one epoch
    assert sorted(epoch[:, 0].tolist()) == rows[:, 0].tolist()
