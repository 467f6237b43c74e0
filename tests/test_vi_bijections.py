"""Planar, radial and Sylvester layers beyond the contract: their constraints, the numerical
density direction, amortised parameters, and the presets' one-pass sampling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import flowforge as ff
from flowforge.functional.scalar_root import Activation, solve_unit_plus_activation
from flowforge.transforms.planar import planar_u_hat
from flowforge.transforms.sylvester import householder_product, orthonormal_columns

T = ff.transforms
f64 = torch.float64


@pytest.mark.parametrize("norm", [1e-3, 0.1, 1.0, 30.0])
def test_u_hat_keeps_w_dot_u_hat_above_minus_one(norm: float) -> None:
    w = torch.randn(2000, 4, dtype=f64)
    w = norm * w / w.norm(dim=-1, keepdim=True)
    u = torch.randn(2000, 4, dtype=f64) * 5
    u[:500] = -torch.rand(500, 1, dtype=f64) * 50 * w[:500] / norm**2  # w.u far below -1
    u_hat = planar_u_hat(w, u)
    wu_hat = (w * u_hat).sum(-1)
    wu = (w * u).sum(-1)
    rounding = 1e-12 * (1 + wu.abs())  # w.u_hat is formed from w.u: its rounding
    assert bool((wu_hat >= -1 - rounding).all())
    assert bool((wu_hat[wu > -20] > -1 + 1e-9).all())
    # exactly m(w.u) = -1 + softplus(w.u), and u changes only along w
    torch.testing.assert_close(wu_hat, F.softplus((w * u).sum(-1)) - 1, atol=1e-9, rtol=1e-9)
    perp = u_hat - u
    cos = (perp * w).sum(-1).abs() / (perp.norm(dim=-1) * w.norm(dim=-1)).clamp_min(1e-300)
    assert bool(((perp.norm(dim=-1) < 1e-12) | (cos > 1 - 1e-9)).all())


@pytest.mark.parametrize("activation", ["tanh", "leaky_relu"])
@pytest.mark.parametrize("dtype", [torch.float32, f64])
def test_planar_root_find_round_trips_near_the_invertibility_limit(
    activation: str, dtype: torch.dtype
) -> None:
    layer = T.Planar(3, activation=activation, slope=0.05).to(dtype)
    with torch.no_grad():
        w = torch.tensor([3.0, -1.0, 0.5], dtype=dtype)
        p = layer.params
        p.raw[p.slot("w")] = w
        # f64: w.u = -12, w.u_hat = m(-12) ~ -1 + 6e-6 (a slope of 6e-6 along w); float32
        # cannot invert that well-conditioned, so there w.u = -3 (slope 0.05)
        wu = -12.0 if dtype == f64 else -3.0
        p.raw[p.slot("u")] = wu * w / (w @ w)
        p.raw[p.slot("b")] = 0.3
    z = 4 * torch.randn(500, 3, dtype=dtype)
    with torch.no_grad():
        x, ladj = layer.inverse(z)
        z2, ladj2 = layer(x)
    tol = 1e-9 if dtype == f64 else 2e-3
    assert (z2 - z).abs().max() < tol
    assert (ladj2 + ladj).abs().max() < (1e-8 if dtype == f64 else 1e-2)
    assert z2.dtype == ladj2.dtype == dtype


def test_root_find_gradients_follow_the_implicit_function() -> None:
    t = torch.randn(6, dtype=f64, requires_grad=True)
    p = (torch.rand(6, dtype=f64) * 3 - 0.9).requires_grad_()
    e = torch.randn(6, dtype=f64, requires_grad=True)
    h = Activation("tanh")
    torch.autograd.gradcheck(
        lambda t, p, e: solve_unit_plus_activation(t, p, torch.ones_like(p), e, h), (t, p, e)
    )


def test_radial_keeps_beta_above_minus_alpha() -> None:
    layer = T.Radial(3)
    with torch.no_grad():
        layer.params.raw.normal_(0, 10)
    _, alpha, beta = layer.alpha_beta()
    assert bool((alpha > 0).all()) and bool((beta > -alpha).all())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "orthogonal", "rank": 2},
        {"kind": "householder", "reflections": 3},
        {"kind": "triangular"},
    ],
)
def test_sylvester_q_is_orthonormal_and_diagonals_keep_it_invertible(kwargs: dict) -> None:
    layer = T.Sylvester(4, **kwargs).double()
    with torch.no_grad():
        layer.params.raw.normal_(0, 3)
    q, r, r_tilde, _ = layer.matrices()
    m = layer.rank
    if q is not None:
        torch.testing.assert_close(q.T @ q, torch.eye(m, dtype=f64))
    assert bool((torch.diagonal(r) * torch.diagonal(r_tilde) > -1).all())
    assert torch.equal(r, r.triu()) and torch.equal(r_tilde, r_tilde.triu())


def test_householder_and_orthonormal_helpers() -> None:
    v = torch.randn(2, 5, 3, dtype=f64)  # a batch of 5 reflections in R^3
    q = householder_product(v)
    torch.testing.assert_close(q @ q.transpose(-1, -2), torch.eye(3, dtype=f64).expand(2, 3, 3))
    a = torch.randn(4, 2, dtype=f64)
    qa = orthonormal_columns(a)
    torch.testing.assert_close(qa.T @ qa, torch.eye(2, dtype=f64))
    assert bool(((qa * a).sum(0) > 0).all())  # signs fixed: a smooth choice


@pytest.mark.parametrize(
    "make",
    [
        lambda: T.Planar(3, context=2, hidden=(8,)),
        lambda: T.Radial(3, context=2, hidden=(8,)),
        lambda: T.Sylvester(3, context=2, hidden=(8,)),
    ],
)
def test_amortised_layers_depend_on_the_context(make) -> None:
    layer = make().double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.5)
    z = torch.randn(1, 3, dtype=f64).expand(4, 3)
    x, _ = layer.inverse(z, torch.randn(4, 2, dtype=f64))
    assert (x - x[:1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"expected a context of shape \(\*, 2\), got None"):
        layer.inverse(z)


@pytest.mark.parametrize(
    "flow",
    [
        lambda: ff.flows.Planar(3, transforms=3),
        lambda: ff.flows.Radial(3, transforms=3),
        lambda: ff.flows.Sylvester(3, transforms=3, kind="orthogonal", rank=2),
        lambda: ff.flows.Sylvester(3, transforms=2, kind="triangular", context=2),
    ],
)
def test_presets_sample_in_one_pass_with_the_exact_density(flow, monkeypatch) -> None:
    f = flow().double()
    with torch.no_grad():
        for p in f.parameters():
            p.add_(0.2 * torch.randn_like(p))
    c = torch.randn(5, 2, dtype=f64) if f.context else None
    x, lp = f.sample_and_log_prob(7, c)
    torch.testing.assert_close(lp, f.log_prob(x, c))
    for cls in (T.Planar, T.Radial, T.Sylvester):
        monkeypatch.setattr(cls, "forward", lambda *a, **k: pytest.fail("density pass"))
    x, lp = f.sample_and_log_prob(7, c)  # sampling direction only
    assert x.shape == (7, *(() if c is None else (5,)), 3)


def test_triangular_sylvester_preset_alternates_the_permutation() -> None:
    f = ff.flows.Sylvester(3, transforms=3, kind="triangular")
    flips = [b.flip for b in f.bijection.bijections if isinstance(b, T.Sylvester)]
    assert flips == [False, True, False]
    with pytest.raises(ValueError, match="Sylvester: expected kind"):
        ff.flows.Sylvester(3, kind="cayley")


@pytest.mark.parametrize("kind", ["orthogonal", "householder", "triangular"])
def test_sylvester_leaky_relu_log_det_in_both_branches(kind: str) -> None:
    """Every row has pre-activations of both signs, so both slopes of the leaky ReLU enter
    the analytic log-determinant, in the sampling pass and the back-substitution pass."""
    torch.manual_seed(7)
    layer = T.Sylvester(4, kind, activation="leaky_relu").double()
    with torch.no_grad():
        layer.params.raw.normal_(0, 0.7)
    q, _, r_tilde, b = layer.matrices()
    m = layer.rank
    # choose y = Q^T z so that pre = R~ y + b alternates in sign, then z = Q y
    pre = torch.tensor(
        [[(-1.0) ** (i + j) * (0.3 + j) for j in range(m)] for i in range(4)], dtype=f64
    )
    y = torch.linalg.solve_triangular(r_tilde, (pre - b).unsqueeze(-1), upper=True).squeeze(-1)
    z = layer._q(q, y)
    got_pre = (r_tilde @ layer._q_t(q, z).unsqueeze(-1)).squeeze(-1) + b
    assert bool((got_pre > 0).any(-1).all() and (got_pre < 0).any(-1).all())
    x, ladj = layer.inverse(z)
    z_back, ladj_back = layer(x)
    torch.testing.assert_close(z_back, z)
    for i in range(len(z)):
        jac = torch.autograd.functional.jacobian(lambda v: layer.inverse(v[None])[0][0], z[i])
        torch.testing.assert_close(ladj[i], torch.linalg.slogdet(jac).logabsdet)
        jac_back = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0][0], x[i])
        torch.testing.assert_close(ladj_back[i], torch.linalg.slogdet(jac_back).logabsdet)
