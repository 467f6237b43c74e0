"""examples/flow_vae.py: the amortised posteriors' densities, training, and the --quick table."""

from __future__ import annotations

import math
from dataclasses import replace
from types import ModuleType

import pytest
import torch

from repo_scripts import load_script


@pytest.fixture(scope="module")
def fv() -> ModuleType:
    return load_script("examples/flow_vae.py", "flow_vae")


def _randomised(vae: torch.nn.Module) -> torch.nn.Module:
    """Every parameter perturbed: the amortising nets (zero at the start) then matter."""
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return vae


@pytest.mark.parametrize("kind", ["diagonal", "planar", "sylvester", "iaf"])
def test_log_q_is_the_change_of_variables_of_the_sampling_map(fv: ModuleType, kind: str) -> None:
    # log q(z | x) = log N(eps) - log |det dz/deps|, with the Jacobian by autograd
    torch.manual_seed(3)
    s = replace(fv.QUICK, planar=3, sylvester=2, iaf=2, hidden=32, context=6)
    vae = _randomised(fv.FlowVAE(kind, s)).double()
    x = torch.bernoulli(torch.full((3, 64), 0.4, dtype=torch.float64))
    eps = torch.randn(1, 3, s.latent, dtype=torch.float64)
    _, log_q = vae.posterior(x, 1, eps)
    for i in range(3):

        def sample(e: torch.Tensor, i: int = i) -> torch.Tensor:
            full = eps.clone()
            full[0, i] = e
            return vae.posterior(x, 1, full)[0][0, i]

        jac = torch.autograd.functional.jacobian(sample, eps[0, i])
        log_normal = -0.5 * eps[0, i].square().sum() - 0.5 * s.latent * math.log(2 * math.pi)
        expected = log_normal - torch.linalg.slogdet(jac).logabsdet
        torch.testing.assert_close(log_q[0, i], expected, rtol=1e-9, atol=1e-9)


def test_amortised_flows_depend_on_the_context(fv: ModuleType) -> None:
    torch.manual_seed(0)
    s = replace(fv.QUICK, context=4)
    for kind in ("planar", "sylvester", "iaf"):
        vae = _randomised(fv.FlowVAE(kind, s))
        z0 = torch.randn(5, s.latent)
        h1, h2 = torch.randn(5, 4), torch.randn(5, 4)
        assert not torch.allclose(vae.flow.inverse(z0, h1)[0], vae.flow.inverse(z0, h2)[0])


def test_training_improves_the_test_bounds(fv: ModuleType) -> None:
    train_x, test_x = fv.digits(0)
    assert set(test_x.unique().tolist()) == {0.0, 1.0} and len(test_x) == 300
    assert float(train_x.min()) >= 0 and float(train_x.max()) <= 1 and len(train_x) == 1497
    torch.manual_seed(0)
    s = replace(fv.QUICK, steps=60, warmup=15, hidden=64, planar=4, batch=50)
    vae = fv.FlowVAE("planar", s)
    torch.manual_seed(1)
    before = fv.evaluate(vae, test_x[:50], elbo_samples=4, k=16)
    curve = fv.train(vae, train_x)
    torch.manual_seed(1)
    after = fv.evaluate(vae, test_x[:50], elbo_samples=4, k=16)
    assert after["elbo"] > before["elbo"] + 10  # about -44 nats at the start
    assert sum(curve[-20:]) > sum(curve[:20])
    assert after["iw"] >= after["elbo"] and after["gap"] >= 0  # IW bound above the ELBO
    assert after["iw"] < 0  # a bound on log p(x) of binary images: negative


def test_a_non_finite_gradient_stops_training(fv: ModuleType) -> None:
    torch.manual_seed(0)
    s = replace(fv.QUICK, steps=3, hidden=16)
    vae = fv.FlowVAE("diagonal", s)
    with torch.no_grad():
        vae.decoder[0].weight[0, 0] = math.nan
    with pytest.raises(FloatingPointError, match="diagonal: non-finite loss or gradient at step 0"):
        fv.train(vae, torch.rand(10, 64))


@pytest.mark.slow
def test_quick_table(fv: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    rows = fv.main(["--quick", "--posteriors", "diagonal,iaf", "--steps", "200"])
    out = capsys.readouterr().out
    assert set(rows) == {"diagonal", "iaf"} and "| iaf |" in out
    for r in rows.values():
        assert -40 < r["elbo"] <= r["iw"] < 0
