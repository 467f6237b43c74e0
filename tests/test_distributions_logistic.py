"""StandardLogistic: NICE's prior, against torch.distributions and closed forms, in float64."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributions as td

import flowforge as ff

F64 = torch.float64


def _torch_logistic() -> td.Distribution:
    """The standard logistic as torch builds it: the logit of a uniform."""
    uniform = td.Uniform(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64))
    return td.TransformedDistribution(uniform, [td.SigmoidTransform().inv])


@pytest.mark.parametrize("shape", [(3,), (2, 3, 4)])
def test_log_prob_matches_torch_distributions(shape: tuple[int, ...]) -> None:
    base = ff.distributions.StandardLogistic(shape).double()
    z = 4.0 * torch.randn(7, *shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    expected = _torch_logistic().log_prob(z).flatten(1).sum(-1)
    got = base.log_prob(z)
    assert got.shape == (7,) and got.dtype == F64
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # closed form of one value: log sigmoid(z) + log(1 - sigmoid(z)), symmetric in z
    one = ff.distributions.StandardLogistic(1).double()
    v = torch.tensor([[0.0], [2.5], [-2.5], [40.0]], dtype=F64)
    closed = torch.tensor([math.log(0.25), 0, 0, 0], dtype=F64)
    closed[1:3] = math.log(torch.sigmoid(torch.tensor(2.5, dtype=F64)).item()) + math.log(
        torch.sigmoid(torch.tensor(-2.5, dtype=F64)).item()
    )
    closed[3] = -40.0 - 2 * math.log1p(math.exp(-40.0))
    torch.testing.assert_close(one.log_prob(v), closed, rtol=1e-12, atol=1e-12)


def test_samples_have_the_logistic_law() -> None:
    torch.manual_seed(0)
    base = ff.distributions.StandardLogistic((2, 2)).double()
    z = base.rsample((50_000,))
    assert z.shape == (50_000, 2, 2) and z.dtype == F64 and bool(torch.isfinite(z).all())
    assert abs(z.mean().item()) < 0.02
    assert z.var().item() == pytest.approx(math.pi**2 / 3, rel=0.02)  # logistic variance
    # sigmoid(z) is uniform: its quantiles are the probabilities
    q = torch.quantile(
        torch.sigmoid(z).flatten()[:100_000], torch.tensor([0.1, 0.5, 0.9], dtype=F64)
    )
    torch.testing.assert_close(q, torch.tensor([0.1, 0.5, 0.9], dtype=F64), atol=0.01, rtol=0)


def test_logit_with_logistic_base_is_exactly_uniform() -> None:
    shape = (1, 4, 4)
    flow = ff.Flow(ff.transforms.Logit(0.0, shape), ff.distributions.StandardLogistic(shape))
    flow = flow.double()
    u = torch.rand(20, *shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    torch.testing.assert_close(flow.log_prob(u), torch.zeros(20, dtype=F64), atol=1e-12, rtol=0)
    x = flow.sample(1000)
    assert x.shape == (1000, *shape) and bool(((x >= 0) & (x <= 1)).all())
    assert x.mean().item() == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ValueError, match="StandardNormal base"):
        flow.sample(2, temperature=0.5)  # scaling a logistic is no tempered logistic
