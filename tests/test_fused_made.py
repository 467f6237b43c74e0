"""MADE's eager fast paths (in-place ReLU, blocked and parameter-major layouts) against the
plain ``nn.Sequential`` it wraps: same values and gradients in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flowforge.nn.made import MADE


@pytest.mark.parametrize("activation", [nn.ReLU, nn.Tanh])
@pytest.mark.parametrize("context", [0, 2])
def test_made_paths_match_sequential(activation: type[nn.Module], context: int) -> None:
    torch.manual_seed(0)
    made = MADE(5, 3, hidden=(16, 12), context=context, activation=activation, zero_last=False)
    made.double()
    x = torch.randn(9, 5, dtype=torch.float64)
    c = torch.randn(9, context, dtype=torch.float64) if context else None
    x_before = x.clone()

    def reference(x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([c, x], -1) if c is not None else x
        return made.net(h).unflatten(-1, (5, 3))

    outs = {
        "reference": reference,
        "plain": lambda x: made(x, c).unflatten(-1, (5, 3)),
        "blocked": lambda x: made(x, c, blocked=True),
        "param_major": lambda x: made(x, c, param_major=True),
    }
    w = torch.randn(9, 5, 3, dtype=torch.float64)
    results = {}
    for name, fn in outs.items():
        made.zero_grad()
        xi = x.clone().requires_grad_()
        y = fn(xi)
        (y * w).sum().backward()
        results[name] = (
            y.detach(),
            xi.grad,
            [torch.zeros(0) if p.grad is None else p.grad.clone() for p in made.parameters()],
        )
    ref = results.pop("reference")
    for name, (y, gx, gp) in results.items():
        torch.testing.assert_close(y, ref[0], rtol=1e-12, atol=1e-12, msg=name)
        torch.testing.assert_close(gx, ref[1], rtol=1e-12, atol=1e-12, msg=name)
        for a, b in zip(gp, ref[2]):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)
    assert torch.equal(x, x_before)
    for i in range(5):
        torch.testing.assert_close(made(x, c, dim=i), ref[0][:, i])
