"""Priors with a bounded support that is not a box (Gamma, LogNormal, HalfNormal, Beta, and
``constraints.cat`` mixtures): the bounds read from ``biject_to(prior.support)``, posteriors
whose samples never leave the support, and densities that carry the change of variables
(checked against torch's own ``biject_to`` transform, a different code path)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import (
    Beta,
    Dirichlet,
    Distribution,
    Gamma,
    HalfNormal,
    Independent,
    LogNormal,
    MultivariateNormal,
    Poisson,
    biject_to,
    constraints,
)

import flowforge as ff
from flowforge.core import Compose, Flow

TINY_NSF = {"transforms": 2, "bins": 4, "hidden": (16, 16)}
INF = math.inf


class _Mixed(Distribution):
    """A prior over (4,) with one support per coordinate: (0, inf), (-1, 2), the line, (-inf, 3)."""

    arg_constraints: dict = {}  # noqa: RUF012
    support = constraints.cat(
        [
            constraints.positive,
            constraints.interval(-1.0, 2.0),
            constraints.real,
            constraints.less_than(3.0),
        ],
        dim=-1,
        lengths=[1, 1, 1, 1],
    )

    def __init__(self) -> None:
        super().__init__(event_shape=torch.Size([4]), validate_args=False)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
        return biject_to(self.support)(torch.randn(*sample_shape, 4))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        t = biject_to(self.support)
        eta = t.inv(value)
        return torch.distributions.Normal(0.0, 1.0).log_prob(eta).sum(-1) - _log_det(t, eta, value)


def _log_det(t: torch.distributions.Transform, eta: torch.Tensor, theta: torch.Tensor):
    """``log |d theta / d eta|`` summed over the coordinates (``CatTransform`` keeps them)."""
    ladj = t.log_abs_det_jacobian(eta, theta)
    return ladj.sum(-1) if ladj.shape == theta.shape else ladj


def _gamma() -> Distribution:
    return Independent(Gamma(torch.tensor([2.0, 3.0]), torch.tensor([2.0, 1.0])), 1)


@pytest.fixture(scope="module")
def gamma_posterior() -> ff.sbi.Posterior:
    """An NPE posterior under a positive (Gamma) prior: x = theta + 0.3 noise."""
    torch.manual_seed(0)
    prior = _gamma()
    theta, x = ff.sbi.simulate(lambda t: t + 0.3 * torch.randn_like(t), prior, 800, seed=1)
    return ff.sbi.NPE(prior, flow_options=TINY_NSF).fit(theta, x, max_steps=150, lr=5e-3)


def test_support_bounds_are_read_from_biject_to() -> None:
    two = torch.ones(2)
    cases = [
        (_gamma(), [0.0, 0.0], [INF, INF]),
        (Independent(LogNormal(0 * two, two), 1), [0.0, 0.0], [INF, INF]),
        (Independent(HalfNormal(two), 1), [0.0, 0.0], [INF, INF]),
        (Independent(Beta(two, 3 * two), 1), [0.0, 0.0], [1.0, 1.0]),  # sigmoid's clip snapped
        (_Mixed(), [0.0, -1.0, -INF, -INF], [INF, 2.0, INF, 3.0]),
    ]
    for prior, low, high in cases:
        bounds = ff.sbi.support_bounds(prior)
        assert bounds is not None
        assert bounds[0].tolist() == low and bounds[1].tolist() == high, (prior, bounds)
    assert ff.sbi.support_bounds(MultivariateNormal(torch.zeros(2), torch.eye(2))) is None
    for prior, pattern in [
        (Dirichlet(torch.ones(3)), "bounded coordinate by coordinate, got Simplex"),
        (Independent(Poisson(torch.ones(2)), 1), "continuous support"),
    ]:
        with pytest.raises(ValueError, match=pattern) as info:
            ff.sbi.support_bounds(prior)
        assert "\n" not in str(info.value)


def test_bounds_agree_with_biject_to_in_value_and_jacobian() -> None:
    """Bounds(theta) = biject_to(support).inv(theta), and its log-det is minus torch's."""
    torch.set_default_dtype(torch.float64)
    try:
        prior = _Mixed()
        low, high = ff.sbi.support_bounds(prior)  # type: ignore[misc]
        to_support = biject_to(prior.support)
        theta = prior.sample((200,))
        eta, ladj = ff.transforms.Bounds(low, high).double()(theta)
        want = to_support.inv(theta)
        torch.testing.assert_close(eta, want)
        torch.testing.assert_close(ladj, -_log_det(to_support, want, theta))
    finally:
        torch.set_default_dtype(torch.float32)


def test_positive_prior_samples_stay_positive(gamma_posterior) -> None:
    assert gamma_posterior.spec["bounds"] == {"low": [0.0, 0.0], "high": [None, None]}
    assert gamma_posterior.spec["box"] is None
    # observations far below the support push the posterior against its bound
    for x_o in ([1.0, 2.0], [-5.0, -5.0], [0.0, 30.0]):
        s = gamma_posterior.sample(5000, torch.tensor(x_o))
        assert bool(torch.isfinite(s).all()) and bool((s > 0).all()), x_o
        # none is there by the last resort's clamp onto the bound (a flow that left it)
        assert int((s <= torch.nextafter(torch.tensor(0.0), torch.tensor(1.0))).sum()) == 0, x_o
    m = gamma_posterior.map(torch.tensor([1.0, 2.0]))
    assert bool((m > 0).all())


def test_positive_prior_density_is_a_change_of_variables(gamma_posterior) -> None:
    """log q(theta) = log q_eta(eta) - log |d theta / d eta| with eta and the Jacobian from
    torch's biject_to, and q_eta the flow after the support's map (built separately)."""
    post = gamma_posterior
    x_o = torch.tensor([1.0, 2.0])
    theta = post.sample(500, x_o)
    to_support = biject_to(_gamma().support)
    eta = to_support.inv(theta)
    steps = post.flow.bijection.bijections  # type: ignore[union-attr]
    assert isinstance(steps[0], ff.transforms.Bounds)
    free_flow = Flow(Compose(list(steps[1:])), post.flow.base, context=post.flow.context)
    with torch.no_grad():
        c = post.embed(x_o.unsqueeze(0)).expand(len(eta), -1)
        want = free_flow.log_prob(eta, c) - _log_det(to_support, eta, theta)
    torch.testing.assert_close(post.log_prob(theta, x_o), want, rtol=1e-4, atol=1e-4)
    # the unconstrained density is the free flow's
    torch.testing.assert_close(
        post.log_prob_unconstrained(theta, x_o),
        want + _log_det(to_support, eta, theta),
        rtol=1e-4,
        atol=1e-4,
    )
    # outside the support: -inf, never NaN
    lp = post.log_prob(torch.tensor([[-0.5, 1.0], [0.0, 1.0], [1.0, -1e30]]), x_o)
    assert lp.tolist() == [-INF, -INF, -INF]


def test_one_dimensional_positive_posterior_integrates_to_one() -> None:
    torch.manual_seed(0)
    prior = Independent(LogNormal(torch.zeros(1), torch.ones(1)), 1)
    theta, x = ff.sbi.simulate(lambda t: t + 0.2 * torch.randn_like(t), prior, 500, seed=2)
    post = ff.sbi.NPE(prior, flow_options=TINY_NSF).fit(theta, x, max_steps=60, lr=5e-3)
    grid = torch.linspace(0.0, 60.0, 600_001)[1:, None]
    lp = post.log_prob(grid, torch.tensor([0.8]))
    mass = torch.logsumexp(lp, 0).exp() * (60.0 / 600_000)
    assert abs(float(mass) - 1.0) < 0.01, float(mass)


def test_beta_and_half_normal_priors_stay_inside() -> None:
    torch.manual_seed(0)
    beta = Independent(Beta(torch.tensor([2.0, 0.5]), torch.tensor([2.0, 0.5])), 1)
    half = Independent(HalfNormal(torch.ones(2)), 1)
    for prior, low, high in [(beta, 0.0, 1.0), (half, 0.0, INF)]:
        theta, x = ff.sbi.simulate(lambda t: t + 0.05 * torch.randn_like(t), prior, 300, seed=3)
        theta[0] = 0.0  # a row on the closed bound (HalfNormal's support includes 0)
        post = ff.sbi.NPE(prior, flow_options=TINY_NSF).fit(theta, x, max_steps=40, lr=5e-3)
        for x_o in ([0.5, 0.5], [-3.0, 3.0]):
            s = post.sample(10_000, torch.tensor(x_o))
            assert bool(((s > low) & (s < high)).all()), (prior, x_o)


def test_saved_bounded_posterior_loads_with_its_support(gamma_posterior, tmp_path) -> None:
    gamma_posterior.save(tmp_path / "run")
    loaded = ff.sbi.load(tmp_path / "run")
    x_o = torch.tensor([0.5, 1.0])
    theta = gamma_posterior.sample(100, x_o)
    assert torch.equal(loaded.log_prob(theta, x_o), gamma_posterior.log_prob(theta, x_o))
    assert bool((loaded.sample(5000, torch.tensor([-4.0, -4.0])) > 0).all())


def test_pairs_outside_the_support_are_refused() -> None:
    prior = _gamma()
    theta, x = ff.sbi.simulate(lambda t: t + 0.1 * torch.randn_like(t), prior, 50, seed=1)
    theta[3, 1] = -0.25
    with pytest.raises(ValueError, match="1 of 50 parameter rows lie outside the prior's support"):
        ff.sbi.NPE(prior, flow_options=TINY_NSF).fit(theta, x, max_steps=1)
