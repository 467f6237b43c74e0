"""Training objectives, and the fit loop using the one it is given."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import flowforge as ff
from flowforge.data import load_dataset
from flowforge.train.config import TrainConfig
from flowforge.train.loop import Trainer
from flowforge.train.losses import Loss, MaximumLikelihood, Objective
from flowforge.train.metrics import MetricsLog
from trainers import quiet_trainer


def _randomised(flow: nn.Module, scale: float = 0.3) -> nn.Module:
    """Random non-zero parameters (a zero last layer would make the flow a fixed map)."""
    torch.manual_seed(3)
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, scale)
    return flow


@pytest.mark.parametrize("preset", ["maf", "nsf", "realnvp"])
def test_maximum_likelihood_is_the_mean_negative_log_prob(preset: str) -> None:
    flow = _randomised(ff.flows.PRESETS[preset](features=3, transforms=2, hidden=(8,))).double()
    x = torch.randn(64, 3, dtype=torch.float64) * 2
    loss = MaximumLikelihood()(flow, x)
    expected = -flow.log_prob(x).mean()
    assert isinstance(loss, Loss) and loss.value.shape == () and dict(loss.terms) == {}
    assert torch.allclose(loss.value, expected, rtol=1e-12, atol=1e-12)
    base_only = -flow.base.log_prob(x).mean()  # a randomised flow is not the identity
    assert not torch.allclose(loss.value, base_only, atol=1e-3)
    (grad,) = torch.autograd.grad(loss.value, next(flow.parameters()))
    (ref,) = torch.autograd.grad(expected, next(flow.parameters()))
    assert torch.allclose(grad, ref, rtol=1e-10, atol=1e-12)


def test_maximum_likelihood_names_what_it_needs() -> None:
    with pytest.raises(TypeError, match=r"needs a model with log_prob.*got Linear"):
        MaximumLikelihood()(nn.Linear(2, 2), torch.zeros(1, 2))


def _trainer(tmp_path: Path, objective: Objective | None, total: int = 20) -> Trainer:
    cfg = TrainConfig.from_layers(
        {"steps": total, "eval_every": 10, "batch_size": 32, "n_val": 128, "n_test": 128},
        {"lr": 1e-2, "weight_decay": 0.0, "schedule": "constant", "clip_grad": 0.0},
    )
    ds = load_dataset("moons", seed=0, n_val=cfg.n_val, n_test=cfg.n_test)
    torch.manual_seed(0)
    flow = _randomised(ff.flows.MAF(features=2, transforms=2, hidden=(8,)), 0.1)
    metrics = MetricsLog(tmp_path / "metrics.jsonl")
    return quiet_trainer(flow, ds, cfg, total, metrics=metrics, objective=objective)


def test_the_default_objective_is_maximum_likelihood(tmp_path: Path) -> None:
    t = _trainer(tmp_path, None)
    assert isinstance(t.objective, MaximumLikelihood)
    x = t.stream.next()
    expected = float(-t.model.log_prob(x).mean().detach())  # type: ignore[operator]
    assert t.train_step(x) == pytest.approx(expected, rel=1e-6)


def test_a_custom_objective_is_the_one_minimised_and_logged(tmp_path: Path) -> None:
    calls: list[int] = []

    def shifted(model: nn.Module, batch: Tensor) -> Loss:
        calls.append(batch.shape[0])
        nll = MaximumLikelihood()(model, batch).value
        return Loss(nll + 100.0, {"extra": torch.tensor(7.0), "nll": nll})

    t = _trainer(tmp_path, shifted)
    t.fit(progress=False)
    assert calls == [32] * 20  # once per training step, never for validation
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20]
    for r in records:
        assert r["train_loss"] == pytest.approx(r["train_nll"] + 100.0)
        assert r["train_extra"] == pytest.approx(7.0)
        assert r["val_nll"] < 50  # validation stays the plain NLL


def test_the_step_follows_the_objectives_gradient(tmp_path: Path) -> None:
    """Loss = sum of the parameters: every gradient is 1, so Adam's first step moves every
    parameter by -lr. Maximum likelihood would move them by different amounts."""

    def parameter_sum(model: nn.Module, batch: Tensor) -> Loss:
        return Loss(sum(p.sum() for p in model.parameters()) + 0 * batch.sum())  # type: ignore[arg-type]

    t = _trainer(tmp_path, parameter_sum)
    before = [p.detach().clone() for p in t.params]
    t.train_step(t.stream.next())
    for p, b in zip(t.params, before):
        assert torch.allclose(p.detach() - b, torch.full_like(b, -1e-2), atol=1e-6)


def test_objectives_that_return_the_wrong_thing_are_named(tmp_path: Path) -> None:
    def bare(model: nn.Module, batch: Tensor) -> Loss:
        return -model.log_prob(batch).mean()  # type: ignore[operator, no-any-return]

    def per_row(model: nn.Module, batch: Tensor) -> Loss:
        return Loss(-model.log_prob(batch))  # type: ignore[operator]

    def clashing(model: nn.Module, batch: Tensor) -> Loss:
        nll = MaximumLikelihood()(model, batch).value
        return Loss(nll, {"loss": nll})

    def row_term(model: nn.Module, batch: Tensor) -> Loss:
        lp = model.log_prob(batch)  # type: ignore[operator]
        return Loss(-lp.mean(), {"rows": lp})

    x = torch.randn(8, 2)
    with pytest.raises(TypeError, match=r"returned a Tensor; expected a flowforge\.train\.losses"):
        _trainer(tmp_path, bare).train_step(x)
    with pytest.raises(ValueError, match=r"loss of shape \(8,\); expected a scalar"):
        _trainer(tmp_path, per_row).train_step(x)
    with pytest.raises(ValueError, match=r"term 'loss' .*the name 'loss' is the value's"):
        _trainer(tmp_path, clashing).train_step(x)
    with pytest.raises(ValueError, match=r"term 'rows' .*not a scalar"):
        _trainer(tmp_path, row_term).train_step(x)
