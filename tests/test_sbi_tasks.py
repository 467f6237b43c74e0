"""Benchmark tasks: simulators agree with their likelihoods, and each reference posterior
agrees with a second method that shares no sampling code with it.

- Gaussian linear: the closed form equals likelihood x prior up to a constant.
- Two moons: the inversion sampler against the posterior density on a fine grid (the exact
  likelihood, computed by the polar change of variables).
- SLCP: the likelihood against torch's MultivariateNormal; the MCMC reference against
  importance resampling of one million prior draws; the true parameter is not in the tails.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal

from flowforge.sbi.tasks import SLCP, TASKS, GaussianLinear, TwoMoons, get_task, split_rhat


def test_registry_and_observations_are_fixed() -> None:
    for name in TASKS:
        task = get_task(name)
        theta_o, x_o = task.observation(1)
        assert theta_o.shape == (task.dim_theta,) and x_o.shape == (task.dim_x,)
        again = get_task(name).observation(1)
        assert torch.equal(theta_o, again[0]) and torch.equal(x_o, again[1])
        assert not torch.equal(x_o, task.observation(2)[1])
        assert torch.isfinite(task.prior.log_prob(theta_o))
        theta, x = task.sample_joint(7, seed=3)
        assert theta.shape == (7, task.dim_theta) and x.shape == (7, task.dim_x)
    with pytest.raises(ValueError, match="expected a task among"):
        get_task("moons")
    with pytest.raises(ValueError, match=r"expected theta of shape \(N, 2\)"):
        TwoMoons().simulator(torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"expected an observation index in \[0, 10\)"):
        SLCP().observation(10)


def test_gaussian_linear_closed_form_is_likelihood_times_prior() -> None:
    task = GaussianLinear()
    _, x_o = task.observation(0)
    g = torch.Generator().manual_seed(0)
    theta = 0.5 * torch.randn(50, 10, generator=g, dtype=torch.float64)
    log_joint = task.log_likelihood(theta, x_o) + task.prior.log_prob(theta)
    gap = log_joint - task.posterior(x_o).log_prob(theta)  # log evidence, one constant
    assert torch.allclose(gap, gap[0].expand_as(gap), atol=1e-9)
    samples = task.reference_posterior_samples(x_o, 20_000)
    assert torch.allclose(samples.mean(0), x_o / 2, atol=0.01)
    assert torch.allclose(samples.var(0), torch.full((10,), 0.05, dtype=torch.float64), rtol=0.05)


def test_two_moons_likelihood_is_the_simulator_density() -> None:
    """The likelihood integrates to 1 over x, and its expected log under the simulator's draws
    equals the integral of p log p (the simulator and the formula are one density)."""
    task = TwoMoons()
    theta = torch.tensor([[0.3, -0.6]], dtype=torch.float64)
    center = task.shift(theta)[0] + torch.tensor([0.25, 0.0], dtype=torch.float64)
    h = 0.001
    u = torch.arange(-0.15 + h / 2, 0.15, h, dtype=torch.float64)  # cell edges on u1 = 0
    grid = torch.stack(torch.meshgrid(center[0] + u, center[1] + u, indexing="ij"), -1)
    xs = grid.reshape(-1, 2)
    p = task.log_likelihood(theta.expand(len(xs), 2), xs).exp()
    assert float(p.sum() * h * h) == pytest.approx(1.0, abs=2e-3)
    neg_entropy = float((p * torch.where(p > 0, p.log(), p.new_zeros(()))).sum() * h * h)
    x = task.simulator(theta.expand(20_000, 2), generator=torch.Generator().manual_seed(1))
    sampled = task.log_likelihood(theta.expand(len(x), 2), x).mean()
    assert float(sampled) == pytest.approx(neg_entropy, abs=0.05)


@pytest.mark.parametrize("i", [0, 1])
def test_two_moons_reference_matches_the_grid_posterior(i: int) -> None:
    task = TwoMoons()
    _, x_o = task.observation(i)
    h = 2 / 1200
    axis = torch.arange(-1 + h / 2, 1, h, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    w = torch.softmax(task.log_likelihood(grid, x_o), 0)  # uniform prior on the box
    mean = (w[:, None] * grid).sum(0)
    cov = (w[:, None, None] * (grid - mean)[:, :, None] * (grid - mean)[:, None, :]).sum(0)
    samples = task.reference_posterior_samples(x_o, 40_000, seed=3)
    assert bool((samples.abs() <= 1).all())
    # Monte Carlo error of 40k samples: std / 200, i.e. below 0.001 here
    assert torch.allclose(samples.mean(0), mean, atol=0.004)
    assert torch.allclose(torch.cov(samples.T), cov, atol=0.002)
    # the mass of each mirror moon (t1 + t2 > 0 or < 0) agrees too
    upper = float(w[grid.sum(-1) > 0].sum())
    assert float((samples.sum(-1) > 0).double().mean()) == pytest.approx(upper, abs=0.01)


def test_slcp_likelihood_against_multivariate_normal() -> None:
    task = SLCP()
    theta, x = task.sample_joint(20, seed=2)
    m, s1, s2, rho = task._moments(theta)
    cov = torch.stack(
        [torch.stack([s1**2, rho * s1 * s2], -1), torch.stack([rho * s1 * s2, s2**2], -1)], -2
    )
    mvn = MultivariateNormal(m, cov)
    for j in range(3):
        expected = mvn.log_prob(x[j].reshape(4, 1, 2)).sum(0)  # (20,) at observation j
        assert torch.allclose(task.log_likelihood(theta, x[j]), expected, atol=1e-8)


def test_slcp_simulator_moments() -> None:
    task = SLCP()
    theta = torch.tensor([[0.5, -1.0, 1.2, -0.8, 0.7]], dtype=torch.float64)
    x = task.simulator(theta.expand(50_000, 5), generator=torch.Generator().manual_seed(0))
    draws = x.reshape(-1, 2)
    s1, s2, rho = 1.44, 0.64, math.tanh(0.7)
    assert torch.allclose(draws.mean(0), theta[0, :2], atol=0.02)
    expected = torch.tensor([[s1**2, rho * s1 * s2], [rho * s1 * s2, s2**2]], dtype=torch.float64)
    assert torch.allclose(torch.cov(draws.T), expected, rtol=0.02, atol=0.01)


@pytest.mark.slow
def test_slcp_mcmc_matches_importance_resampling() -> None:
    """Observation 3 (importance sampling from the prior has an ESS of ~15k per million draws
    there): folded means and stds of the MCMC reference (the default sampler) agree with those
    of the weighted prior draws, and the chains mix (split-R-hat < 1.02)."""
    task = SLCP()
    _, x_o = task.observation(3)
    samples = task.reference_posterior_samples(x_o, 4000, seed=0)
    assert task.last_rhat is not None and float(task.last_rhat.max()) < 1.02
    g = torch.Generator().manual_seed(1)
    pool = 6 * torch.rand(1_000_000, 5, generator=g, dtype=torch.float64) - 3
    w = torch.softmax(task.log_likelihood(pool, x_o), 0)
    assert float(1 / (w**2).sum()) > 5000

    def fold(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t[:, :2], t[:, 2:4].abs(), t[:, 4:]], -1)

    is_mean = (w[:, None] * fold(pool)).sum(0)
    is_std = ((w[:, None] * (fold(pool) - is_mean) ** 2).sum(0)).sqrt()
    mc = fold(samples)
    assert torch.allclose(mc.mean(0), is_mean, atol=0.1 * float(is_std.min()) + 0.03)
    assert torch.allclose(mc.std(0), is_std, rtol=0.1)
    # the sign flips of t3 and t4 are balanced
    assert float((samples[:, 2] > 0).double().mean()) == pytest.approx(0.5, abs=0.05)


def test_slcp_true_parameter_is_not_in_the_tails() -> None:
    """The posterior density at the true parameter ranks inside the reference samples'
    densities (an HPD level strictly between 1% and 99%) at three observations."""
    task = SLCP(chains=100, burn_in=600, thin=4)
    for i in range(3):
        theta_o, x_o = task.observation(i)
        samples = task.reference_posterior_samples(x_o, 1000, seed=i)
        lp = task.log_likelihood(samples, x_o)
        lp_true = task.log_likelihood(theta_o[None], x_o)
        level = float((lp > lp_true).double().mean())
        assert 0.01 < level < 0.99, (i, level)


def test_split_rhat_flags_chains_that_disagree() -> None:
    g = torch.Generator().manual_seed(0)
    mixed = torch.randn(6, 500, 1, generator=g)
    stuck = mixed + torch.arange(6.0)[:, None, None]  # each chain in its own place
    assert float(split_rhat(mixed)) < 1.01
    assert float(split_rhat(stuck)) > 1.5


def test_reference_cache_is_written_and_read(tmp_path: Path) -> None:
    task = TwoMoons()
    _, x_o = task.observation(0)
    first = task.reference_posterior_samples(x_o, 100, seed=4, cache_dir=tmp_path)
    (path,) = tmp_path.glob("two_moons-*-n100-seed4.npy")
    np.save(path, np.zeros((100, 2)))  # read back, not recomputed
    assert torch.equal(
        task.reference_posterior_samples(x_o, 100, seed=4, cache_dir=tmp_path),
        torch.zeros(100, 2, dtype=torch.float64),
    )
    assert torch.equal(task.reference_posterior_samples(x_o, 100, seed=4), first)
    assert not list(tmp_path.glob("*.tmp"))
