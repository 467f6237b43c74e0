"""Dequantizers (uniform, variational), the dequantization objective and its evaluation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor, nn

import flowforge as ff
from flowforge.data import (
    DataError,
    UniformDequantizer,
    VariationalDequantizer,
    dequantize,
    dequantized_log_likelihood,
)
from flowforge.dequantization import conv_encoder
from flowforge.train.losses import MaximumLikelihood, VariationalDequantization

K = 17


def _randomise(module: nn.Module, scale: float, seed: int = 3) -> nn.Module:
    """Random non-zero parameters (zero last layers would make every flow the identity)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return module


def _model(features: int, seed: int = 1) -> ff.Flow:
    """A random density of ``u`` in ``[0, 1)^D``: ``Logit(0.05)`` then a RealNVP."""
    torch.manual_seed(seed)
    inner = ff.flows.RealNVP(features=features, transforms=2, hidden=(16,))
    flow = ff.Flow(
        ff.Compose([ff.transforms.Logit(0.05, (features,)), inner.bijection]), inner.base
    )
    return _randomise(flow, 0.3, seed).double()  # type: ignore[return-value]


def _vd(features: int, seed: int = 2, scale: float = 0.2) -> VariationalDequantizer:
    torch.manual_seed(seed)
    deq = VariationalDequantizer(features, K, transforms=2, hidden=(16,))
    return _randomise(deq, scale, seed).double()  # type: ignore[return-value]


def _f(t: Tensor) -> float:
    return float(t.detach())


def _levels(n: int, features: int, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    v = torch.randint(0, K, (n, features), generator=gen).double()
    v[0], v[1] = 0.0, K - 1.0  # both boundaries
    return v


def _uniform_model(shape: Sequence[int]) -> ff.Flow:
    """Exactly the uniform density on ``[0, 1)^D``: ``Logit(0)`` and a standard logistic base."""
    return ff.Flow(ff.transforms.Logit(0.0, shape), ff.distributions.StandardLogistic(shape))


# --- uniform -------------------------------------------------------------------------------


def test_uniform_bound_is_the_standard_estimate_for_the_same_noise() -> None:
    d = 5
    flow, v = _model(d), _levels(64, d)
    torch.manual_seed(11)
    loss = VariationalDequantization(UniformDequantizer(d, K))(flow, v)
    torch.manual_seed(11)
    u = dequantize(v, K)
    standard = MaximumLikelihood()(flow, u).value  # -mean log p(u), the usual training loss
    assert loss.value.dtype == torch.float64
    assert torch.equal(loss.value, standard)
    assert _f(loss.terms["log_q"]) == 0.0
    expected_bpd = (_f(standard) + d * math.log(K)) / (d * math.log(2))
    assert _f(loss.terms["bound_bpd"]) == pytest.approx(expected_bpd, rel=1e-12)

    torch.manual_seed(12)
    res = dequantized_log_likelihood(flow, UniformDequantizer(d, K), v, samples=1)
    torch.manual_seed(12)
    lp = flow.log_prob(dequantize(v, K))
    assert torch.allclose(res.bound, lp - d * math.log(K), rtol=0, atol=1e-12)
    assert torch.equal(res.bound, res.importance)  # one sample: the estimate is the bound
    bpd = (_f(-lp.mean()) + d * math.log(K)) / (d * math.log(2))  # the usual bits/dim
    assert res.bound_bpd == pytest.approx(bpd, rel=1e-12)


@pytest.mark.parametrize("shape", [(3,), (1, 2, 2)])
def test_a_uniform_model_scores_minus_d_log_k_exactly(shape: tuple[int, ...]) -> None:
    flow = _uniform_model(shape).double()
    d = math.prod(shape)
    v = torch.randint(0, K, (50, *shape)).double()
    v[0], v[1] = 0.0, K - 1.0
    u = dequantize(v, K)
    assert torch.allclose(flow.log_prob(u), torch.zeros(50, dtype=torch.float64), atol=1e-9)
    res = dequantized_log_likelihood(flow, UniformDequantizer(shape, K), v, samples=8)
    exact = torch.full((50,), -d * math.log(K), dtype=torch.float64)
    assert torch.allclose(res.bound, exact, atol=1e-9)
    assert torch.allclose(res.importance, exact, atol=1e-9)
    assert res.bound_bpd == pytest.approx(math.log2(K), abs=1e-9)
    assert res.importance_bpd == pytest.approx(math.log2(K), abs=1e-9)


# --- variational ---------------------------------------------------------------------------


def test_variational_noise_is_a_density_on_the_unit_cube() -> None:
    """``q(e | v)`` integrates to 1 over ``(0, 1)^2`` (the sigmoid's Jacobian is counted) and
    ``log_prob`` is the density that ``sample`` reports."""
    deq = _vd(2)
    n = 400
    grid = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    e = torch.cartesian_prod(grid, grid)  # (n^2, 2) midpoints
    for level in ([0.0, 16.0], [7.0, 3.0]):
        v = torch.tensor(level, dtype=torch.float64).expand(n * n, 2)
        mass = deq.log_prob(v, e).exp().mean()
        assert _f(mass) == pytest.approx(1.0, abs=1e-3)
    v = _levels(32, 2)
    u, log_q = deq.sample(v)
    assert ((u >= v / K) & (u < (v + 1) / K)).all()
    assert torch.allclose(deq.log_prob(v, u * K - v), log_q, atol=1e-6)
    assert log_q.std() > 0.1  # not the uniform density


def _exact_log_mass(flow: ff.Flow, v: Tensor, n: int = 400) -> Tensor:
    """``log P(v) = log int p((v + e) / K) de - D log K`` for ``D = 2`` by the midpoint rule."""
    grid = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    e = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        out = [torch.logsumexp(flow.log_prob((row + e) / K), 0) - math.log(n * n) for row in v]
    return torch.stack(out) - 2 * math.log(K)


@pytest.mark.parametrize("variational", [False, True])
def test_importance_sampling_tightens_the_bound_and_converges(variational: bool) -> None:
    """Against ``log P(v)`` by quadrature (D = 2): the importance-sampled estimate lies above
    the bound and approaches ``log P(v)`` as the number of samples grows.

    Uniform noise has bounded weights, so the error falls steadily. A sigmoid of a Gaussian
    has thin tails at the bin edges where ``p`` does not vanish, so its weights have heavy
    tails: the estimate converges, but slowly and not monotonically in one draw.
    """
    flow = _randomise(_model(2), 0.1, 1)  # a smooth density: accurate quadrature
    deq = _vd(2, scale=0.05) if variational else UniformDequantizer(2, K)
    v = _levels(8, 2, seed=4)
    exact = _exact_log_mass(flow, v)
    sizes = (1, 64, 4096) if variational else (1, 64, 4096, 16384)
    torch.manual_seed(0)
    est = {s: dequantized_log_likelihood(flow, deq, v, samples=s) for s in sizes}
    assert torch.equal(est[1].bound, est[1].importance)
    bound = est[sizes[-1]].bound  # ~ E_q[w], the bound itself
    gap = exact - bound  # the bound's slack, KL(q || posterior) >= 0
    assert _f(gap.mean()) > (0.3 if variational else 0.02), gap
    errors = [_f((exact - est[s].importance).abs().mean()) for s in sizes]
    for s in sizes[1:]:
        assert _f(est[s].importance.mean()) > _f(bound.mean())
        assert est[s].importance_bpd < est[s].bound_bpd
    if variational:
        assert errors[-1] < 0.3 * _f(gap.mean()), (errors, gap)
    else:
        assert errors == sorted(errors, reverse=True), errors
        assert errors[-1] < 0.05 * _f(gap.mean()), (errors, gap)


def test_the_objective_is_the_negative_bound() -> None:
    d = 4
    flow, deq, v = _model(d), _vd(d), _levels(32, d)
    torch.manual_seed(5)
    loss = VariationalDequantization(deq)(flow, v)
    torch.manual_seed(5)
    u, log_q = deq.sample(v)
    assert torch.allclose(loss.value, -(flow.log_prob(u) - log_q).mean(), rtol=1e-12)
    bpd = (_f(loss.value) + d * math.log(K)) / (d * math.log(2))
    assert _f(loss.terms["bound_bpd"]) == pytest.approx(bpd, rel=1e-12)
    assert _f(loss.terms["log_q"]) == pytest.approx(_f(log_q.mean()), rel=1e-12)


@pytest.mark.parametrize("encoder", [False, True])
def test_gradients_reach_the_flow_and_the_dequantizer(encoder: bool) -> None:
    shape = (1, 4, 4)
    flow = _model(16)
    flow = ff.Flow(ff.Compose([ff.transforms.Reshape(shape, (16,)), flow.bijection]), flow.base)
    torch.manual_seed(2)
    kwargs = {"encoder": conv_encoder(shape, context=6, hidden=4), "context": 6} if encoder else {}
    deq = VariationalDequantizer(shape, K, transforms=2, hidden=(8,), **kwargs)  # type: ignore[arg-type]
    deq = _randomise(deq, 0.2).double()  # type: ignore[assignment]
    objective = VariationalDequantization(deq)
    assert {id(p) for p in objective.parameters()} == {id(p) for p in deq.parameters()}
    v = torch.randint(0, K, (8, *shape)).double()
    objective(flow, v).value.backward()
    parts: dict[str, nn.Module] = {"flow": flow, "noise flow": deq.flow}
    if encoder:
        assert deq.encoder is not None
        parts["encoder"] = deq.encoder
    for name, part in parts.items():
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert all(bool(g.abs().sum() > 0) for g in grads if g is not None), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("loc", [-1e3, 1e3, 0.0])
def test_no_nan_at_boundaries_and_extreme_outputs(dtype: torch.dtype, loc: float) -> None:
    d = 4
    deq = _vd(d, scale=3.0).to(dtype)  # large weights: large coupling outputs
    base = deq.flow.base
    assert isinstance(base, ff.distributions.ConditionalDiagNormal)
    with torch.no_grad():
        base.net.bias[:d] = loc  # the base mean: a saturated sigmoid when |loc| is large
    flow = _uniform_model((d,)).to(dtype)
    inner = _model(d).to(dtype)
    for v in (torch.zeros(16, d), torch.full((16, d), K - 1.0), _levels(16, d).float()):
        v = v.to(dtype)
        u, log_q = deq.sample(v)
        assert ((u >= v / K) & (u < (v + 1) / K) & (u > 0) & (u < 1)).all()
        assert torch.isfinite(log_q).all()
        assert torch.isfinite(deq.log_prob(v, u * K - v)).all()
        for model in (flow, inner):
            deq.zero_grad()
            loss = VariationalDequantization(deq)(model, v)
            assert torch.isfinite(loss.value)
            loss.value.backward()
            assert all(torch.isfinite(p.grad).all() for p in deq.parameters() if p.grad is not None)
    e = torch.tensor([[0.0, 1.0, 0.5, 1.0]], dtype=dtype)  # noise on the closed edges
    assert torch.isfinite(deq.log_prob(torch.zeros(1, d, dtype=dtype), e)).all()


def test_non_finite_evaluation_is_an_error() -> None:
    class Broken(nn.Module):
        def log_prob(self, u: Tensor) -> Tensor:
            out = u.new_zeros(u.shape[0])
            out[3] = math.nan
            return out

    with pytest.raises(FloatingPointError, match="1 example"):
        dequantized_log_likelihood(Broken(), UniformDequantizer(2, K), torch.zeros(5, 2), 2)


def test_evaluation_restores_modes_and_batches() -> None:
    flow, deq, v = _model(3), _vd(3), _levels(20, 3)
    flow.train()
    deq.eval()
    res = dequantized_log_likelihood(flow, deq, v, samples=3, batch_size=7)
    assert flow.training and not deq.training
    assert res.bound.shape == res.importance.shape == (20,) and res.samples == 3
    assert (res.importance >= res.bound - 1e-12).all()  # logmeanexp >= mean, per example


def test_bad_arguments_are_named() -> None:
    with pytest.raises(DataError, match="levels must be an integer >= 2"):
        UniformDequantizer(3, 1)
    with pytest.raises(DataError, match=r"expected v of shape \(N, 1, 2, 2\)"):
        UniformDequantizer((1, 2, 2), K).sample(torch.zeros(3, 4))
    with pytest.raises(DataError, match="needs its output size context="):
        VariationalDequantizer((1, 4, 4), K, encoder=nn.Flatten())
    with pytest.raises(DataError, match="context of size 3"):
        VariationalDequantizer(4, K, flow=ff.flows.RealNVP(features=4, context=3, transforms=1))
    with pytest.raises(DataError, match="does not hold D = 4"):
        VariationalDequantizer(4, K, flow=ff.flows.RealNVP(features=5, context=4, transforms=1))
    with pytest.raises(ValueError, match="samples must be >= 1"):
        dequantized_log_likelihood(_model(2), UniformDequantizer(2, K), torch.zeros(1, 2), 0)


@pytest.mark.slow
def test_variational_dequantization_training_on_digits_lowers_the_bound() -> None:
    """A short joint training on the digits: the bound drops from its start and stays finite,
    and the learned noise beats uniform noise for the flow it was trained with (150 steps,
    seeds 0-2: 3.705 -> 2.590, 3.730 -> 2.636, 3.679 -> 2.584 bits/dim against uniform noise's
    2.623, 2.661, 2.622; 300 steps: 2.425 against 2.486, for a margin the assertions do not
    need)."""
    from flowforge.data.sklearn_sets import load_sklearn_dataset

    ds = load_sklearn_dataset("digits", 0)
    shape = (1, 8, 8)
    torch.manual_seed(0)
    glow = ff.flows.Glow(shape=shape, levels=2, depth=2, hidden=(32, 32))
    flow = ff.Flow(ff.Compose([ff.transforms.Logit(0.05, shape), glow.bijection]), glow.base)
    deq = VariationalDequantizer(shape, K, transforms=2, hidden=(64,))
    objective = VariationalDequantization(deq)
    params = [*flow.parameters(), *objective.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    val = ds.val[:128]
    start = None
    gen = torch.Generator().manual_seed(0)
    for step in range(150):
        for group in opt.param_groups:
            group["lr"] = 1e-3 * min(1.0, (step + 1) / 50)
        loss = objective(flow, ds.train[torch.randint(0, ds.train.shape[0], (64,), generator=gen)])
        assert torch.isfinite(loss.value)
        opt.zero_grad()
        loss.value.backward()
        torch.nn.utils.clip_grad_norm_(params, 100.0)
        opt.step()
        if start is None:  # the bound just after ActNorm's data initialisation
            start = dequantized_log_likelihood(flow, deq, val, samples=4).bound_bpd
    end = dequantized_log_likelihood(flow, deq, val, samples=4)
    uniform = dequantized_log_likelihood(flow, UniformDequantizer(shape, K), val, samples=4)
    assert start is not None and math.isfinite(end.bound_bpd)
    assert end.bound_bpd < start - 0.5, (start, end.bound_bpd)
    assert end.bound_bpd < uniform.bound_bpd, (end.bound_bpd, uniform.bound_bpd)


# --- the conv noise flow -------------------------------------------------------------------

DT = torch.float64


def _images(n: int, shape: tuple[int, ...], dtype: torch.dtype = DT) -> Tensor:
    gen = torch.Generator().manual_seed(n)
    v = torch.randint(0, K, (n, *shape), generator=gen).to(dtype)
    v.view(n, -1)[0, :2] = torch.tensor([0.0, K - 1.0])  # both boundaries
    return v


def test_conv_noise_flow_starts_as_uniform_noise() -> None:
    """Zero last layers and a standard logistic base: ``sigmoid(y)`` is uniform, ``log q = 0``."""
    torch.manual_seed(5)
    deq = VariationalDequantizer((1, 4, 4), K, noise="conv", transforms=3, hidden=8)
    v = _images(64, (1, 4, 4), torch.float32)
    u, log_q = deq.sample(v)
    assert torch.allclose(log_q, torch.zeros(64), atol=1e-5)
    e = (u * K - v).flatten().detach()
    assert abs(float(e.mean()) - 0.5) < 0.03 and abs(float(e.var()) - 1 / 12) < 0.01


def test_conv_noise_density_matches_the_autograd_jacobian() -> None:
    """``log q(e | v)`` against the density of ``e = sigmoid(T^-1(eps; v))`` written with the
    autograd Jacobian of ``eps -> e`` (float64, random parameters)."""
    torch.manual_seed(6)
    shape = (2, 2, 2)
    deq = _randomise(
        VariationalDequantizer(shape, K, noise="conv", transforms=3, hidden=4, features=3), 0.15
    ).double()
    v = _images(1, shape)
    context = deq.features(v)

    def noise(eps: Tensor) -> Tensor:
        y, _ = deq.flow.bijection.inverse(eps.reshape(1, *shape), context)
        return torch.sigmoid(y).flatten()

    for seed in range(3):
        eps = torch.randn(8, generator=torch.Generator().manual_seed(seed), dtype=DT)
        jac = torch.autograd.functional.jacobian(noise, eps)
        e = noise(eps)
        log_base = (-eps - 2 * torch.nn.functional.softplus(-eps)).sum()  # standard logistic
        expected = log_base - torch.linalg.slogdet(jac)[1]
        got = deq.log_prob(v, e.reshape(1, *shape))
        assert torch.allclose(got, expected.reshape(1), atol=1e-8), (got, expected)
        assert got.abs() > 0.1  # not the uniform density


def test_conv_noise_flow_sees_the_image() -> None:
    torch.manual_seed(7)
    deq = _randomise(VariationalDequantizer((1, 4, 4), K, noise="conv", hidden=8), 0.3)
    e = torch.rand(1, 1, 4, 4) * 0.9 + 0.05
    v = _images(1, (1, 4, 4), torch.float32)
    w = v.clone()
    w[0, 0, 0, 0] = (w[0, 0, 0, 0] + 5) % K
    assert not torch.allclose(deq.log_prob(v, e), deq.log_prob(w, e))


def test_conv_noise_flow_is_small_and_checks_its_arguments() -> None:
    deq = VariationalDequantizer((1, 8, 8), K, noise="conv", transforms=4, hidden=16)
    assert 5_000 < sum(p.numel() for p in deq.parameters()) < 20_000
    assert deq.noise == "conv" and deq.noise_shape == (1, 8, 8)
    with pytest.raises(DataError, match="unknown noise flow 'maf'; valid: conv, realnvp"):
        VariationalDequantizer((1, 4, 4), K, noise="maf")
    with pytest.raises(DataError, match=r"noise='conv' is for images \(C, H, W\)"):
        VariationalDequantizer(16, K, noise="conv")
    with pytest.raises(DataError, match="builds its own encoder"):
        VariationalDequantizer((1, 4, 4), K, noise="conv", encoder=nn.Flatten(), context=16)
    with pytest.raises(DataError, match="hidden must be an integer >= 1"):
        VariationalDequantizer((1, 4, 4), K, noise="conv", hidden=0)


def test_run_recipes_rebuild_the_noise_flow() -> None:
    from flowforge.runs.recipe import build_dequantizer

    spec = {"kind": "variational", "noise": "conv", "shape": [1, 4, 4], "levels": K}
    deq = build_dequantizer({**spec, "transforms": 3, "hidden": [8]})
    assert deq.noise == "conv" and len(deq.flow.bijection.bijections) == 3
    old = {k: spec[k] for k in ("kind", "shape", "levels")}  # written before "noise" existed
    deq = build_dequantizer({**old, "transforms": 1, "hidden": [8]})
    assert deq.noise == "realnvp"
