"""The step engine (flowforge.fit.loop): the step, its schedule, clipping, the non-finite guard,
the moving average, and keep-best with patience and the starting weights."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from flowforge.fit.ema import WeightAverage
from flowforge.fit.loop import KeepBest, NonFiniteStep, Stepper
from flowforge.fit.schedule import LRSchedule


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.7)
    return net


def _loss(net: nn.Module, x: Tensor) -> Tensor:
    return net(x).pow(2).mean() + net(x).mean()


def test_steps_equal_a_hand_written_loop_with_lambda_lr_and_clipping() -> None:
    """Reference: AdamW + torch's LambdaLR cosine + clip_grad_norm_, written out by hand."""
    x = torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    total, lr = 12, 0.05
    ref = _net()
    opt = torch.optim.AdamW(ref.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    for _ in range(total):
        loss = _loss(ref, x)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(ref.parameters()), 0.5)
        opt.step()
        sched.step()
    net = _net()
    stepper = Stepper(
        torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01),
        LRSchedule("cosine", lr, total),
        clip=0.5,
    )
    for step in range(total):
        assert stepper.step(step, lambda: _loss(net, x)) is not None
    for a, b in zip(ref.parameters(), net.parameters(), strict=True):
        assert torch.equal(a, b)


def test_peaks_scale_each_group_and_the_plain_rate_is_the_schedules() -> None:
    net = _net()
    groups = [{"params": [net[0].weight], "lr": 0.2}, {"params": [net[2].weight], "lr": 0.02}]
    opt = torch.optim.SGD(groups)
    stepper = Stepper(opt, LRSchedule("cosine", 1.0, 10), peaks=[0.2, 0.02])
    assert stepper.set_lr(5) == pytest.approx(0.1)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.01])
    Stepper(opt, LRSchedule("constant", 0.3, 10)).set_lr(5)
    assert [g["lr"] for g in opt.param_groups] == [0.3, 0.3]


@pytest.mark.parametrize("where", ["loss", "gradient norm"])
def test_a_non_finite_step_never_reaches_the_weights(where: str) -> None:
    net = _net()
    x = torch.randn(8, 3, dtype=torch.float64)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    ema = WeightAverage(net, 0.9)
    seen: list[tuple[str, float, int]] = []
    stepper = Stepper(
        opt,
        LRSchedule("constant", 0.1, 10),
        clip=1.0,
        ema=ema,
        model=net,
        on_non_finite=lambda what, value, step: seen.append((what, value, step)),
    )
    assert stepper.step(0, lambda: _loss(net, x)) is not None
    before = {k: v.clone() for k, v in net.state_dict().items()}
    average = {k: v.clone() for k, v in (ema.state or {}).items()}
    w = net[0].weight

    def bad() -> Tensor:  # NaN loss, or a finite loss whose gradient is NaN (sqrt at 0)
        if where == "loss":
            return _loss(net, x) * math.nan
        return torch.sqrt((w - w.detach()).pow(2).sum()) + _loss(net, x).detach()

    assert stepper.step(1, bad) is None
    assert seen and seen[0][0] == where and math.isnan(seen[0][1]) and seen[0][2] == 1
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert ema.updates == 1 and all(torch.equal(v, average[k]) for k, v in ema.state.items())
    assert all(p.grad is None for p in net.parameters())
    with pytest.raises(NonFiniteStep, match=f"the {where} is nan at step 1"):
        Stepper(opt, LRSchedule("constant", 0.1, 10), clip=1.0).step(1, bad)
    if where == "gradient norm":  # unchecked: clipped as it is (fit_vi, the estimators)
        unchecked = Stepper(opt, LRSchedule("constant", 0.1, 10), clip=1.0, check_gradient=False)
        assert unchecked.step(1, bad) is not None


def test_keep_best_start_patience_and_tolerance() -> None:
    net = _net()
    kept: list[tuple[int, float]] = []
    keep = KeepBest(
        net.state_dict, patience=2, rel_tol=0.01, on_best=lambda s, v, w: kept.append((s, v))
    )
    keep.start(math.nan)  # a non-finite start is no candidate
    assert keep.weights is None and keep.best == math.inf
    keep.start(10.0)
    assert (keep.best, keep.best_step, keep.bad, kept) == (10.0, 0, 0, [(0, 10.0)])
    with torch.no_grad():
        net[0].weight.add_(1.0)
    assert not keep.observe(5, 9.95)  # within 1% of 10: no improvement
    assert keep.observe(6, 9.0) and keep.best_step == 6 and keep.bad == 0
    assert torch.equal(keep.weights["0.weight"], net[0].weight)
    assert keep.weights["0.weight"] is not net[0].weight  # a copy
    assert not keep.observe(7, 9.5) and not keep.stop
    assert not keep.observe(8, math.nan) and keep.stop
    assert KeepBest(net.state_dict).stop is False  # patience 0: never


@pytest.mark.parametrize(("n", "batch"), [(10, 3), (9, 3), (4, 10), (1, 1)])
def test_shuffled_batches_cover_every_row_once_in_one_drawn_order(n: int, batch: int) -> None:
    """An epoch is one permutation drawn from the generator, cut into batches (the last one
    smaller); given index rows, it shuffles those. The reference cuts its own draw with
    torch.split."""
    from flowforge.fit.batches import shuffled_batches

    got = list(shuffled_batches(n, batch, torch.Generator().manual_seed(5)))
    ref = torch.randperm(n, generator=torch.Generator().manual_seed(5)).split(batch)
    assert [b.tolist() for b in got] == [b.tolist() for b in ref]
    assert sorted(torch.cat(got).tolist()) == list(range(n))
    rows = torch.arange(100, 100 + n)
    got = list(shuffled_batches(rows, batch, torch.Generator().manual_seed(5)))
    assert [b.tolist() for b in got] == [(b + 100).tolist() for b in ref]
