"""Learning-rate warmup and the moving average of the weights in the fit loop."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor

import flowforge as ff
from flowforge.data import load_dataset
from flowforge.eval.likelihood import log_likelihoods
from flowforge.fit.ema import WeightAverage
from flowforge.fit.schedule import LRSchedule
from flowforge.runs import RunError, read_safetensors
from flowforge.train.checkpoint import load_checkpoint
from flowforge.train.config import TrainConfig
from flowforge.train.loop import Trainer
from flowforge.train.metrics import MetricsLog
from trainers import quiet_trainer, run_files

# -- warmup -----------------------------------------------------------------------------------


def test_warmup_ramps_linearly_then_hands_over_to_the_schedule() -> None:
    w = 10
    cos = LRSchedule("cosine", lr=2.0, total_steps=110, min_lr=0.2, warmup_steps=w)
    assert [cos.lr_at(i) for i in range(w)] == pytest.approx([2.0 * (i + 1) / w for i in range(w)])
    assert cos.lr_at(w) == 2.0  # the peak right after the warmup
    # the cosine runs over the 100 steps after the warmup: half way at step 60
    assert cos.lr_at(60) == pytest.approx(0.2 + 1.8 * 0.5)
    assert cos.lr_at(110) == pytest.approx(0.2) and cos.lr_at(500) == pytest.approx(0.2)
    const = LRSchedule("constant", lr=0.3, total_steps=50, warmup_steps=4)
    assert [const.lr_at(i) for i in range(6)] == pytest.approx([0.075, 0.15, 0.225, 0.3, 0.3, 0.3])
    plateau = LRSchedule("plateau", lr=1.0, total_steps=50, patience=0, factor=0.5, warmup_steps=4)
    plateau.observe(1.0)
    plateau.observe(2.0)  # one bad evaluation halves the rate, warmup included
    assert plateau.lr_at(1) == pytest.approx(0.25) and plateau.lr_at(9) == pytest.approx(0.5)
    plateau.cut(0.1)  # the non-finite cut composes too
    assert plateau.lr_at(1) == pytest.approx(0.025)
    assert LRSchedule("cosine", lr=1.0, total_steps=10).lr_at(0) == 1.0  # off by default
    with pytest.raises(ValueError, match="warmup_steps must be >= 0"):
        LRSchedule("cosine", lr=1.0, total_steps=10, warmup_steps=-1)


def _setup(tmp_path: Path, total: int = 30, **options: object) -> Trainer:
    cfg = TrainConfig.from_layers(
        {"steps": total, "eval_every": 10, "batch_size": 32, "n_val": 128, "n_test": 128},
        dict(options),
    )
    ds = load_dataset("moons", seed=1, n_val=cfg.n_val, n_test=cfg.n_test)
    torch.manual_seed(0)
    flow = ff.flows.RealNVP(features=2, transforms=2, hidden=(8,))
    return quiet_trainer(flow, ds, cfg, total, **run_files(tmp_path))


def test_the_trainer_applies_the_warmup(tmp_path: Path) -> None:
    trainer = _setup(tmp_path, total=20, warmup_steps=8, lr=0.01, schedule="constant")
    seen = []
    for _ in range(10):
        trainer.train_step(trainer.stream.next())
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.step += 1
    assert seen == pytest.approx([0.01 * min(1.0, (i + 1) / 8) for i in range(10)])


# -- the moving average of the weights ---------------------------------------------------------


def test_weight_average_update_rule() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)).double()
    ema = WeightAverage(net, decay=0.9)
    values = []
    for _ in range(30):
        with torch.no_grad():
            for p in net.parameters():
                p.normal_()
            net[1].running_mean.normal_()
        values.append({k: v.clone() for k, v in net.state_dict().items()})
        ema.update(net)
    weights = torch.tensor([0.9 ** (29 - i) for i in range(30)], dtype=torch.float64)
    weights /= weights.sum()  # the bias-corrected exponential average of every update
    expected = {
        k: sum(w * s[k] for w, s in zip(weights, values)) if k in ema.params else values[-1][k]
        for k in values[0]
    }
    assert ema.state is not None and ema.updates == 30
    for k, v in expected.items():
        torch.testing.assert_close(ema.state[k], v.to(ema.state[k].dtype), msg=k)
    assert torch.equal(ema.state["1.running_mean"], values[-1]["1.running_mean"])  # copied
    with pytest.raises(ValueError, match="decay must be in"):
        WeightAverage(net, decay=1.0)


def test_the_average_is_validated_kept_and_saved(tmp_path: Path) -> None:
    trainer = _setup(tmp_path, total=30, ema_decay=0.95, lr=0.02)
    for _ in range(5):
        trainer.train_step(trainer.stream.next())
        trainer.step += 1
    assert trainer.ema is not None and trainer.ema.state is not None
    raw = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    twin = ff.flows.RealNVP(features=2, transforms=2, hidden=(8,))
    twin.load_state_dict(trainer.ema.state)
    expected = -log_likelihoods(twin, trainer.val).mean().item()
    twin.load_state_dict(raw)
    assert trainer.evaluate() == pytest.approx(expected, rel=1e-6)
    assert expected != pytest.approx(-log_likelihoods(twin, trainer.val).mean().item(), rel=1e-6)
    for k, v in trainer.model.state_dict().items():  # evaluating leaves the raw weights
        assert torch.equal(v, raw[k]), k
    trainer.fit(progress=False)
    assert trainer.ema is not None and trainer.ema.state is not None
    raw_differs = False
    saved, _ = read_safetensors(tmp_path / "model.safetensors", "flowforge-weights")
    assert trainer.best_state is not None
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, trainer.best_state[k]), k  # restore_best: the best average
        assert torch.equal(saved[k], trainer.best_state[k]), k
    assert trainer.best_step == 30  # the best weights are the average of that step
    for k, v in trainer.ema.state.items():
        assert torch.equal(v, trainer.best_state[k]), k
    ckpt = load_checkpoint(tmp_path / "checkpoint.safetensors")
    for k, v in ckpt["model"].items():
        raw_differs |= not torch.equal(v, ckpt["ema"]["state"][k])
    assert raw_differs  # the raw weights are checkpointed beside the average
    # the validation NLL of the record is that of the average, not of the raw weights
    last = MetricsLog(tmp_path / "metrics.jsonl").read()[-1]
    avg = trainer.evaluate()
    assert last["val_nll"] == pytest.approx(avg) and last["step"] == 30


def test_without_restore_best_the_model_ends_with_the_average(tmp_path: Path) -> None:
    trainer = _setup(tmp_path, total=20, ema_decay=0.9, restore_best=False)
    trainer.fit(progress=False)
    assert trainer.ema is not None and trainer.ema.state is not None
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, trainer.ema.state[k]), k


class _Stop(Exception):
    pass


def test_resume_with_the_average_is_exact(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight = _setup(tmp_path / "a", ema_decay=0.9)
    straight.fit(progress=False)
    interrupted = _setup(tmp_path / "b", ema_decay=0.9)
    draw, calls = interrupted.stream.next, iter(range(1000))

    def next_or_die() -> Tensor:
        if next(calls) == 25:
            raise _Stop
        return draw()

    interrupted.stream.next = next_or_die  # type: ignore[method-assign]
    with pytest.raises(_Stop):
        interrupted.fit(progress=False)
    resumed = _setup(tmp_path / "b", ema_decay=0.9)
    resumed.load_state_dict(load_checkpoint(tmp_path / "b" / "checkpoint.safetensors"))
    assert resumed.step == 20 and resumed.ema is not None and resumed.ema.updates == 20
    resumed.metrics.truncate(resumed.step)  # type: ignore[union-attr]
    resumed.fit(progress=False)
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert straight.ema is not None and resumed.ema is not None
    assert straight.ema.state is not None and resumed.ema.state is not None
    for k, v in straight.ema.state.items():
        assert torch.equal(v, resumed.ema.state[k]), k
    a = MetricsLog(tmp_path / "a" / "metrics.jsonl").read()
    b = MetricsLog(tmp_path / "b" / "metrics.jsonl").read()
    assert [r["val_nll"] for r in a] == [r["val_nll"] for r in b]
    # a checkpoint without an average cannot continue a run that keeps one
    plain = _setup(tmp_path / "a")
    state = plain.state_dict()
    with pytest.raises(RunError, match="holds no average of the weights"):
        _setup(tmp_path / "b", ema_decay=0.9).load_state_dict(state, "ckpt")


def test_a_non_finite_step_restores_the_average_too(tmp_path: Path) -> None:
    trainer = _setup(tmp_path, total=20, ema_decay=0.9)
    for _ in range(10):
        trainer.train_step(trainer.stream.next())
        trainer.step += 1
    trainer._after_eval(trainer.evaluate())  # the last good state: step 10
    assert trainer.ema is not None and trainer.ema.state is not None
    good = {k: v.clone() for k, v in trainer.ema.state.items()}
    for _ in range(3):
        trainer.train_step(trainer.stream.next())
        trainer.step += 1
    trainer._non_finite("loss")
    assert trainer.ema.updates == 10
    for k, v in good.items():
        assert torch.equal(trainer.ema.state[k], v), k


def test_a_non_finite_validation_row_is_not_averaged_away(tmp_path: Path) -> None:
    trainer = _setup(tmp_path, total=20)
    trainer.val = trainer.val.clone()
    trainer.val[3] = math.nan
    messages: list[str] = []
    trainer.log = messages.append
    assert math.isnan(trainer.evaluate())
    assert "rows 3; 0-based" in messages[0]
