"""A short real fit: NSF on a 2-D Gaussian mixture whose exact density is known."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

import flowforge as ff


def target() -> MixtureSameFamily:
    locs = torch.tensor([[-2.0, -1.0], [2.0, -1.0], [0.0, 2.0]])
    scales = torch.tensor([[0.6, 0.3], [0.3, 0.6], [0.5, 0.5]])
    return MixtureSameFamily(
        Categorical(torch.tensor([0.3, 0.3, 0.4])), Independent(Normal(locs, scales), 1)
    )


@pytest.mark.slow
def test_nsf_reaches_the_optimum_on_a_gaussian_mixture() -> None:
    torch.manual_seed(1)
    p = target()
    x_test = p.sample((20_000,))
    optimum = -p.log_prob(x_test).mean().item()  # the test NLL of the true density
    flow = ff.flows.NSF(features=2, transforms=3, bins=8, hidden=(64, 64))
    opt = torch.optim.Adam(flow.parameters(), 3e-3)
    # 300 steps: gap to the optimum 0.012, 0.011, 0.014 nats over seeds 1-3 (600 steps: 0.006,
    # 0.006, 0.007), so the 0.05 bound keeps 3.5x headroom at half the cost
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 300)
    for _ in range(300):
        loss = -flow.log_prob(p.sample((512,))).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        nll = -flow.log_prob(x_test).mean().item()
    start = -ff.flows.NSF(features=2).log_prob(x_test).mean().item()
    print(f"NSF test NLL {nll:.4f} vs optimum {optimum:.4f}")
    assert math.isfinite(nll)
    assert nll < start - 0.5  # it learned something
    assert nll - optimum < 0.05, (nll, optimum)
