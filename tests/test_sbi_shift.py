"""NPE's linear skip (:class:`~flowforge.sbi.shift.LinearShift`): fitted by least squares before
training, the untrained posterior is already centred on a Gaussian-linear posterior's mean;
posteriors saved before the skip existed still load without it."""

from __future__ import annotations

import torch
from torch.distributions import Independent, Normal

import flowforge as ff

TINY_MAF = {"transforms": 1, "hidden": (8,)}


def _linear_pairs(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.distributions.Distribution]:
    """theta ~ N((1, -2), diag(4, 0.25)), x = M theta + 0.1 noise (3-D): the posterior mean is
    linear in x (a prior far from N(0, I), so the z-scoring before the skip matters)."""
    prior = Independent(Normal(torch.tensor([1.0, -2.0]), torch.tensor([2.0, 0.5])), 1)
    M = torch.tensor([[1.0, 0.5], [-0.7, 1.2], [0.3, -0.4]])
    theta, x = ff.sbi.simulate(lambda t: t @ M.T + 0.1 * torch.randn(len(t), 3), prior, n, seed=3)
    return theta, x, prior


def test_untrained_posterior_is_centred_on_the_linear_mean() -> None:
    """With no step trained, the posterior's median at x_o is the least-squares regression of
    theta on x at x_o (the exact posterior mean up to the prior's pull), not the prior mean."""
    torch.manual_seed(0)
    theta, x, prior = _linear_pairs(2000)
    post = ff.sbi.NPE(prior, "maf", flow_options=TINY_MAF).fit(theta, x, max_steps=0)
    assert post.spec["linear_shift"] is True
    design = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
    coef = torch.linalg.lstsq(design, theta.double()).solution
    x_o = torch.tensor([[1.5, -3.0, 1.4], [-0.8, -1.6, 0.5]])
    expected = torch.cat([x_o.double(), torch.ones(2, 1, dtype=torch.float64)], 1) @ coef
    z = torch.zeros(1, 2, 2)  # the base's centre, through the flow at both observations
    with torch.no_grad():
        centre = post.flow.bijection.inverse_value(z.reshape(2, 2), post.embed(x_o))
    centre = centre.double()
    # the untrained MAF is not the identity: allow its small offset, far below |expected| ~ 1
    assert torch.allclose(centre, expected, atol=0.1), (centre, expected)


def test_a_posterior_saved_without_the_skip_loads_and_evaluates_as_saved(tmp_path) -> None:
    """A spec without ``linear_shift`` (runs saved before it) builds no skip, and a skipped
    posterior round-trips through save / load with identical densities."""
    torch.manual_seed(0)
    theta, x, prior = _linear_pairs(300)
    x_o = torch.tensor([0.2, -0.3, 0.1])
    draws = torch.randn(7, 2)
    for shift in (False, True):
        npe = ff.sbi.NPE(prior, "maf", flow_options=TINY_MAF)
        npe.linear_shift_flows = ("maf",) if shift else ()
        post = npe.fit(theta, x, max_steps=3)
        if not shift:
            del post.spec["linear_shift"]  # the spec of a run saved before the skip
        post.save(tmp_path / str(shift))
        loaded = ff.sbi.load(tmp_path / str(shift))
        assert loaded.spec.get("linear_shift", False) is shift
        assert torch.equal(loaded.log_prob(draws, x_o), post.log_prob(draws, x_o))
