"""The fit loop with objectives of their own: a learned dequantizer trained, saved, restored."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import flowforge as ff
from flowforge.data import load_dataset
from flowforge.dequantization import VariationalDequantizer, dequantized_log_likelihood
from flowforge.eval.likelihood import log_likelihoods
from flowforge.runs.recipe import ModelSpec, build_flow
from flowforge.train.batches import TrainStream, level_split, prepare_split
from flowforge.train.config import ConfigError, TrainConfig
from flowforge.train.loop import Trainer
from flowforge.train.losses import (
    CNFLikelihood,
    FlowMatching,
    MaximumLikelihood,
    VariationalDequantization,
)
from flowforge.train.model import dequantizer_spec_for, objective_for

CPU = torch.device("cpu")


def _vd_trainer(tmp_path: Path, seed: int = 0) -> Trainer:
    cfg = TrainConfig.from_layers({"steps": 20, "eval_every": 10, "batch_size": 32, "lr": 3e-3})
    ds = load_dataset("digits")
    torch.manual_seed(seed)
    spec = ModelSpec(
        "realnvp",
        {"features": 64, "transforms": 2, "hidden": (16,)},
        "image",
        (1, 8, 8),
        levels=17,
        logit_alpha=1e-3,
    )
    flow = build_flow(spec)
    deq = VariationalDequantizer((1, 8, 8), 17, transforms=1, hidden=(16,))
    return Trainer(
        flow,
        TrainStream(ds, cfg.batch_size, cfg.seed, raw=True),
        level_split(ds, "val"),
        cfg,
        20,
        CPU,
        checkpoint=tmp_path / "checkpoint.safetensors",
        objective=VariationalDequantization(deq),
        levels=17,
    )


def _deq_params(t: Trainer) -> list[torch.Tensor]:
    assert isinstance(t.objective, VariationalDequantization)
    return [p.detach().clone() for p in t.objective.dequantizer.parameters()]


def test_trainer_trains_the_objectives_parameters(tmp_path: Path) -> None:
    t = _vd_trainer(tmp_path)
    before = _deq_params(t)
    for _ in range(3):
        t.train_step(t.stream.next())
    after = _deq_params(t)
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    ids = {id(p) for g in t.optimizer.param_groups for p in g["params"]}
    assert all(id(p) in ids for p in t.objective.parameters())  # type: ignore[attr-defined]


def test_stream_and_validation_of_a_learned_dequantizer_are_levels(tmp_path: Path) -> None:
    t = _vd_trainer(tmp_path)
    x = t.stream.next()
    assert torch.equal(x, x.round()) and float(x.max()) > 1  # integer levels, not u
    assert torch.equal(t.val, t.val.round())


def test_validation_is_the_variational_bound(tmp_path: Path) -> None:
    t = _vd_trainer(tmp_path)
    assert isinstance(t.objective, VariationalDequantization)
    deq, d = t.objective.dequantizer, 64
    val_nll = t.evaluate()
    torch.manual_seed(1)
    res = dequantized_log_likelihood(t.model, deq, t.val, samples=8)
    bound_nll = float(-(res.bound + d * math.log(17)).mean())
    u = prepare_split(load_dataset("digits"), "val", 0)
    uniform_nll = float(-log_likelihoods(t.model, u, 4096, CPU).mean())
    assert abs(val_nll - bound_nll) < 0.05 * abs(uniform_nll - bound_nll)
    assert t.last_val_bpd == pytest.approx((val_nll + d * math.log(17)) / (d * math.log(2)))


def test_objective_state_is_checkpointed_and_restored(tmp_path: Path) -> None:
    t = _vd_trainer(tmp_path)
    for _ in range(3):
        t.train_step(t.stream.next())
    state = t.state_dict()
    assert state["objective"] is not None
    fresh = _vd_trainer(tmp_path, seed=5)
    assert any(
        not torch.equal(a, b) for a, b in zip(_deq_params(fresh), _deq_params(t), strict=True)
    )
    fresh.load_state_dict(state)
    for a, b in zip(_deq_params(fresh), _deq_params(t), strict=True):
        assert torch.equal(a, b)


def test_nan_recovery_restores_the_objectives_state(tmp_path: Path) -> None:
    t = _vd_trainer(tmp_path)
    good = _deq_params(t)
    with torch.no_grad():
        for p in t.objective.parameters():  # type: ignore[attr-defined]
            p.add_(1.0)
    t._non_finite("loss")
    for a, b in zip(_deq_params(t), good, strict=True):
        assert torch.equal(a, b)


def test_objective_for_picks_and_refuses() -> None:
    ffjord = ff.flows.FFJORD(features=2, hidden=(8,))
    nsf = ff.flows.NSF(features=2, transforms=1, hidden=(8,))

    def cfg(**kw: object) -> TrainConfig:
        return TrainConfig.from_layers(dict(kw))

    assert isinstance(objective_for(cfg(flow="ffjord"), ffjord, None), CNFLikelihood)
    assert isinstance(objective_for(cfg(), nsf, None), MaximumLikelihood)
    fm = objective_for(cfg(flow="ffjord", objective="flow-matching", ot=True), ffjord, None)
    assert isinstance(fm, FlowMatching) and fm.ot
    rnode = objective_for(cfg(flow="ffjord", kinetic=0.1, jacobian=0.2), ffjord, None)
    assert isinstance(rnode, CNFLikelihood) and (rnode.kinetic, rnode.jacobian) == (0.1, 0.2)
    for bad, flow in [
        ({"objective": "flow-matching"}, nsf),
        ({"kinetic": 0.1}, nsf),
        ({"ot": True, "flow": "ffjord"}, ffjord),
        ({"objective": "flow-matching", "kinetic": 0.1, "flow": "ffjord"}, ffjord),
        ({"objective": "flow-matching", "flow": "ffjord"}, ff.flows.FFJORD(2, transforms=2)),
    ]:
        with pytest.raises(ConfigError):
            objective_for(cfg(**bad), flow, None)


def test_dequantizer_spec_needs_images_and_known_options() -> None:
    digits, moons = load_dataset("digits"), load_dataset("moons", n_val=10, n_test=10)
    cfg = TrainConfig.from_layers({"dequantization": "variational"})
    spec = dequantizer_spec_for(cfg, digits)
    assert spec is not None and spec["shape"] == [1, 8, 8] and spec["levels"] == 17
    assert dequantizer_spec_for(TrainConfig(), digits) is None
    with pytest.raises(ConfigError, match="images"):
        dequantizer_spec_for(cfg, moons)
    with pytest.raises(ConfigError, match="width"):
        dequantizer_spec_for(cfg.replace(dequantizer_options={"width": 3}), digits)
