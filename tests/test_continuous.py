"""Continuous flows: the CNF bijection, its trace kernels, RNODE regularisers, flow matching.

Numbers are compared in float64 with tight solver tolerances; networks get random non-zero
parameters (a zero last layer makes the flow the identity and every check trivial).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

import flowforge as ff
from flowforge.data.toy import sample_toy, toy_log_prob
from flowforge.functional import plain_modules
from flowforge.functional.trace import (
    exact_trace,
    hutchinson_trace,
    jacobian_autograd,
    jvp_autograd,
    trace_noise,
)
from flowforge.train.losses import CNFLikelihood, FlowMatching
from flowforge.transforms import CNF, SolverError
from registry import float64_default, randomize, tight_cnf

F64 = torch.float64
TIGHT = {"rtol": 1e-11, "atol": 1e-11}


class PlainODENet(ff.nn.ODENet):
    """The same network, not exactly an ODENet: the CNF takes its autograd (plain) path."""


class LinearField(nn.Module):
    """``f(t, z) = z A^T``: a linear, time-independent velocity."""

    def __init__(self, a: Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a.clone())

    def forward(self, t: Tensor, z: Tensor, context: Tensor | None = None) -> Tensor:
        return z @ self.a.T


def _cnf(d: int = 3, context: int = 0, plain: bool = False, **kw: object) -> CNF:
    net_cls = PlainODENet if plain else ff.nn.ODENet
    cnf = tight_cnf(
        net_cls(d, (8, 8), context=context), d, context=context, **{"time": 0.7, **TIGHT, **kw}
    )  # type: ignore[arg-type]
    randomize(cnf, 0.4)
    return cnf.to(F64)


def _jacobian_logdet(cnf: CNF, x: Tensor, c: Tensor | None) -> Tensor:
    out = []
    for i in range(x.shape[0]):
        ci = None if c is None else c[i : i + 1]
        jac = torch.autograd.functional.jacobian(lambda v, ci=ci: cnf(v[None], ci)[0][0], x[i])
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


# ---------------------------------------------------------------------------- exact trace
@pytest.mark.parametrize("plain", [False, True], ids=["fused", "autograd"])
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_exact_ladj_is_the_log_det_of_the_flow_maps_jacobian(plain: bool, inverse: bool) -> None:
    cnf = _cnf(3, context=2, plain=plain, learn_time=True).eval()
    b = cnf.inv if inverse else cnf
    x, c = torch.randn(2, 3, dtype=F64), torch.randn(2, 2, dtype=F64)
    _, ladj = b(x, c)
    assert torch.allclose(ladj, _jacobian_logdet(b, x, c), rtol=1e-8, atol=1e-9)  # type: ignore[arg-type]


def test_fused_and_autograd_paths_agree_in_float64() -> None:
    net = randomize(ff.nn.ODENet(4, (16, 16), context=2, activation="elu"), 0.5).to(F64)
    t, c = torch.tensor(0.3, dtype=F64), torch.randn(6, 2, dtype=F64)
    z = torch.randn(6, 4, dtype=F64, requires_grad=True)
    e = trace_noise(z, "gaussian")
    f, jac_t = net.forward_and_jvp(t, z, None, c)  # the Jacobian, transposed
    f2 = net(t, z, c)
    jac = jacobian_autograd(f2, z, create_graph=False)
    assert torch.allclose(f, f2, atol=1e-12)
    assert torch.allclose(jac_t, jac.transpose(-1, -2), atol=1e-12)
    eye = torch.eye(4, dtype=F64).expand(6, 4, 4)  # the same through explicit tangents
    assert torch.allclose(net.forward_and_jvp(t, z, eye, c)[1], jac_t, atol=1e-12)
    _, je = net.forward_and_jvp(t, z, e.unsqueeze(-2), c)
    assert torch.allclose(je[:, 0], jvp_autograd(f2, z, e, create_graph=False), atol=1e-12)
    # Without context and at one scalar time, gates are computed once and broadcast.
    net0 = randomize(ff.nn.ODENet(3, (8,), context=0, activation="tanh"), 0.5).to(F64)
    z0 = torch.randn(5, 3, dtype=F64, requires_grad=True)
    f0, jac0_t = net0.forward_and_jvp(t, z0)
    jac0 = jacobian_autograd(net0(t, z0), z0, create_graph=False)
    assert jac0_t.shape == (5, 3, 3) and torch.allclose(jac0_t, jac0.transpose(-1, -2), atol=1e-12)
    assert torch.allclose(f0, net0(t.expand(5), z0), atol=1e-12)  # per-row times agree
    # Whole solves: density, regularisers and gradients through both paths.
    fused, plain = _cnf(3, 2), _cnf(3, 2, plain=True)
    plain.load_state_dict(fused.state_dict())
    x, cc = torch.randn(5, 3, dtype=F64), torch.randn(5, 2, dtype=F64)
    results = []
    for cnf in (fused, plain):
        with cnf.regularizing():
            z_out, ladj = cnf(x, cc)
        r = cnf.last_solve
        assert r is not None and r.kinetic is not None and r.jacobian is not None
        (ladj.sum() + r.jacobian.sum()).backward()
        results.append((z_out, ladj, r.kinetic, r.jacobian, cnf.net.flat.grad))
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-10)
    with plain_modules():  # the switch takes the autograd path too
        assert torch.allclose(fused(x, cc)[1], results[0][1], rtol=1e-8, atol=1e-10)


def test_inverse_returns_the_input_and_negates_ladj() -> None:
    cnf = _cnf(3, context=2, learn_time=True)
    x, c = torch.randn(8, 3, dtype=F64), torch.randn(8, 2, dtype=F64)
    with torch.no_grad():
        z, ladj = cnf(x, c)
        x2, ladj2 = cnf.inverse(z, c)
    assert not torch.allclose(z, x, atol=1e-2)  # the map is not the identity
    assert torch.allclose(x2, x, atol=1e-9) and torch.allclose(ladj2, -ladj, atol=1e-9)


@pytest.mark.parametrize(("method", "steps", "tol"), [("rk4", 40, 1e-6), ("euler", 400, 2e-2)])
def test_fixed_step_methods_count_and_round_trip(method: str, steps: int, tol: float) -> None:
    cnf = _cnf(2, method=method, solver_steps=steps)
    x = torch.randn(16, 2, dtype=F64)
    with torch.no_grad():
        z, ladj = cnf(x)
        assert cnf.nfe_forward == steps * (4 if method == "rk4" else 1)
        x2, ladj2 = cnf.inverse(z)
    assert torch.allclose(x2, x, atol=tol) and torch.allclose(ladj2, -ladj, atol=tol)


# ---------------------------------------------------------------------------- Hutchinson
@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_for_trace_and_frobenius(kind: str) -> None:
    """The mean of n draws is within 4 standard errors (of the draws) of the truth."""
    a = torch.randn(5, 5, dtype=F64)
    n = 20_000
    e = trace_noise(torch.zeros(n, 5, dtype=F64), kind)  # type: ignore[arg-type]
    if kind == "rademacher":
        assert set(e.unique().tolist()) == {-1.0, 1.0}
    est = hutchinson_trace(e, e @ a.T)
    exact = exact_trace(a[None])
    for draws, truth in ((est.trace, exact.trace[0]), (est.frobenius, exact.frobenius[0])):
        se = draws.std() / math.sqrt(n)
        assert abs(draws.mean() - truth) < 4 * se, (draws.mean(), truth, se)


def test_hutchinson_ladj_of_a_solve_is_unbiased() -> None:
    """One solve of one point repeated n times (each row its own probe): the mean of the
    rows' ladj is within 4 standard errors of the exact ladj."""
    cnf = _cnf(3, trace="hutchinson", rtol=1e-8, atol=1e-8).train()
    x = torch.randn(1, 3, dtype=F64)
    with torch.no_grad():
        exact = cnf.eval()(x)[1][0]
        est = cnf.train()(x.expand(4000, 3))[1]
    se = est.std() / math.sqrt(est.numel())
    assert est.std() > 1e-3  # an estimate, not the exact value
    assert abs(est.mean() - exact) < 4 * se, (est.mean(), exact, se)


def test_hutchinson_noise_is_held_fixed_within_a_solve() -> None:
    """Linear field ``A z``: with one probe ``e`` per row the estimate is ``T e^T A e``, so
    ``(ladj - T tr A) / (T (a_12 + a_21))`` is +1 or -1 exactly (Rademacher, D = 2); probes
    re-drawn per evaluation would average to values in between."""
    a = torch.tensor([[0.3, 0.8], [-0.2, -0.5]], dtype=F64)
    cnf = tight_cnf(LinearField(a), 2, time=0.9, trace="hutchinson", **TIGHT).to(F64).train()
    with torch.no_grad():
        _, ladj = cnf(torch.randn(64, 2, dtype=F64))
    ratio = (ladj - 0.9 * a.trace()) / (0.9 * (a[0, 1] + a[1, 0]))
    assert torch.allclose(ratio.abs(), torch.ones_like(ratio), atol=1e-8), ratio
    assert (ratio > 0).any() and (ratio < 0).any()


def test_evaluation_uses_the_exact_trace_unless_asked() -> None:
    cnf = _cnf(3, trace="hutchinson").eval()
    x = torch.randn(6, 3, dtype=F64)
    with torch.no_grad():
        exact = cnf(x)[1]
        assert torch.equal(cnf(x)[1], exact)  # deterministic
        cnf.eval_trace = "hutchinson"
        assert not torch.allclose(cnf(x)[1], exact, atol=1e-6)


# ---------------------------------------------------------------------------- gradients
def test_adjoint_and_direct_backprop_give_the_same_gradients() -> None:
    grads = []
    for adjoint in (True, False):
        torch.manual_seed(1)
        cnf = _cnf(2, context=2, learn_time=True, adjoint=adjoint, rtol=1e-10, atol=1e-10)
        x = torch.randn(7, 2, dtype=F64, requires_grad=True)
        c = torch.randn(7, 2, dtype=F64, requires_grad=True)
        with cnf.regularizing():
            z, ladj = cnf(x, c)
        r = cnf.last_solve
        assert r is not None and r.kinetic is not None and r.jacobian is not None
        loss = (z.square().sum(-1) - ladj + r.kinetic + 0.5 * r.jacobian).mean()
        loss.backward()
        assert (cnf.nfe_backward > 0) == adjoint
        grads.append([cnf.net.flat.grad, cnf.log_time.grad, x.grad, c.grad])
    for a, b in zip(*grads):
        assert a is not None and b is not None and a.abs().max() > 0
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-8), (a - b).abs().max()


def test_gradients_flow_inside_no_grad_callers_where_the_trace_needs_them() -> None:
    for plain in (False, True):
        cnf = _cnf(2, plain=plain).eval()
        x = torch.randn(4, 2, dtype=F64)
        with torch.enable_grad():
            reference = cnf(x)[1]
        with torch.no_grad():
            ladj = cnf(x)[1]
            samples = ff.Flow(cnf, ff.distributions.StandardNormal(2).to(F64)).sample(3)
        assert torch.allclose(ladj, reference, atol=1e-10) and not ladj.requires_grad
        assert samples.shape == (3, 2) and torch.isfinite(samples).all()


# ---------------------------------------------------------------------------- regularisers
def test_regularisers_equal_their_closed_form_on_a_linear_field() -> None:
    """``A = Q diag(l) Q^T``: ``z(t) = e^{At} x``, ``∫_0^T ||A z||^2 dt = sum_i l_i y_i^2
    (e^{2 l_i T} - 1) / 2`` with ``y = Q^T x``, and ``∫_0^T ||A||_F^2 dt = T ||A||_F^2``."""
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=F64))
    lam = torch.tensor([0.7, -0.4, 0.2], dtype=F64)
    a, time = q @ torch.diag(lam) @ q.T, 0.8
    x = torch.randn(5, 3, dtype=F64)
    y = x @ q
    kinetic = (lam * y.square() * torch.expm1(2 * lam * time) / 2).sum(-1)
    for trace in ("exact", "hutchinson"):
        cnf = tight_cnf(LinearField(a), 3, time=time, trace=trace, **TIGHT).to(F64).train()
        with cnf.regularizing():
            z, ladj = cnf(x)
        r = cnf.last_solve
        assert r is not None and r.kinetic is not None and r.jacobian is not None
        assert torch.allclose(z, x @ torch.linalg.matrix_exp(a * time).T, atol=1e-9)
        assert torch.allclose(r.kinetic, kinetic, rtol=1e-8, atol=1e-10)
        if trace == "exact":
            assert torch.allclose(ladj, time * a.trace().expand(5), atol=1e-9)
            assert torch.allclose(r.jacobian, time * a.square().sum().expand(5), atol=1e-9)
    # Hutchinson: the Frobenius estimate is T ||A e||^2 for the row's probe e, mean T ||A||_F^2.
    cnf = tight_cnf(LinearField(a), 3, time=time, trace="hutchinson", **TIGHT).to(F64).train()
    with cnf.regularizing(), torch.no_grad():
        cnf(torch.randn(20_000, 3, dtype=F64))
    jf = cnf.last_solve.jacobian  # type: ignore[union-attr]
    assert abs(jf.mean() - time * a.square().sum()) < 4 * jf.std() / math.sqrt(jf.numel())


def test_regularisers_leave_the_adaptive_steps_unchanged() -> None:
    """The error control looks at ``z`` and ``ladj`` only: integrating the regularisers too
    takes the same steps (the same NFE and ``ladj``), though their integrands are large."""
    cnf = _cnf(2, rtol=1e-5, atol=1e-5).to(torch.float32)
    randomize(cnf, 1.5)  # a large Jacobian: its Frobenius integrand dominates the state
    x = torch.randn(64, 2)
    with torch.no_grad():
        _, ladj = cnf(x)
        plain = cnf.nfe_forward
        with cnf.regularizing():
            _, ladj_reg = cnf(x)
    r = cnf.last_solve
    assert r is not None and r.jacobian is not None and float(r.jacobian.mean()) > 2
    assert r.nfe_forward == plain and torch.equal(ladj_reg, ladj)


def test_cnf_likelihood_adds_weighted_regularisers_and_reports_nfe() -> None:
    flow = ff.flows.FFJORD(features=2, hidden=(8,), adjoint=True).to(F64)  # counts its NFE
    randomize(flow, 0.3)
    x = torch.randn(32, 2, dtype=F64)
    reference = -flow.log_prob(x).mean()
    plain = CNFLikelihood()(flow, x)
    assert sorted(plain.terms) == ["nfe_backward", "nfe_forward", "nll"]
    loss = CNFLikelihood(kinetic=0.1, jacobian=0.2)(flow, x)
    t = loss.terms
    assert torch.allclose(t["nll"], plain.value) and torch.allclose(t["nll"], reference)
    assert torch.allclose(loss.value, t["nll"] + 0.1 * t["kinetic"] + 0.2 * t["jacobian"])
    assert float(t["nfe_backward"]) == 0.0
    loss.value.backward()
    cnf = flow.bijection.bijections[0]
    assert float(t["nfe_backward"]) == cnf.nfe_backward > 0  # type: ignore[operator]
    assert float(t["nfe_forward"]) > 0
    with pytest.raises(TypeError, match="CNF"):
        CNFLikelihood()(ff.flows.MAF(features=2, transforms=1, hidden=(4,)), x)


# ---------------------------------------------------------------------------- failures
def test_a_failing_solve_raises_naming_the_nfe_and_the_time() -> None:
    class Breaks(nn.Module):  # non-finite after t = 0.5: the step size underflows
        def forward(self, t: Tensor, z: Tensor, context: Tensor | None = None) -> Tensor:
            return z * torch.where(t < 0.5, 1.0, math.nan)

    cnf = tight_cnf(Breaks(), 1, time=2.0, **TIGHT).to(F64)
    with pytest.raises(SolverError, match=r"after \d+ function evaluations at t = 0\.[5-9].*dt"):
        cnf(torch.ones(2, 1, dtype=F64))
    cnf = _cnf(2, max_nfe=10)
    with pytest.raises(SolverError, match=r"forward solve stopped after 11 function evaluations"):
        cnf(torch.randn(3, 2, dtype=F64))


@pytest.mark.parametrize("scale", [1e3, 1e6])
def test_extreme_inputs_give_finite_values_or_a_clear_error(scale: float) -> None:
    for activation in ("softplus", "tanh", "elu"):
        cnf = CNF(ff.nn.ODENet(2, (8,), activation=activation), 2, max_nfe=2000)
        randomize(cnf, 0.3)
        x = scale * torch.randn(16, 2)
        try:
            with torch.no_grad():
                z, ladj = cnf(x)
        except SolverError:
            continue
        assert torch.isfinite(z).all() and torch.isfinite(ladj).all()
    flow = ff.flows.FFJORD(features=2, hidden=(8,))
    loss = FlowMatching(ot=True)(flow, scale * torch.randn(32, 2))
    loss.value.backward()
    assert (
        torch.isfinite(loss.value)
        and torch.isfinite(flow.bijection.bijections[0].net.flat.grad).all()
    )  # type: ignore[union-attr]


def test_tolerances_below_the_dtypes_resolution_are_refused() -> None:
    """A float32 CNF refuses tolerances below 32 eps of float32, built or set (rtol 1e-30 was
    raised to 3.8e-6 without a word); a float64 one takes them; a float64-built CNF cast to
    float32 solves at float32's floor, and its last solve records the tolerance it ran at."""
    net = randomize(ff.nn.ODENet(2, (8,)), 0.3)
    for bad in (1e-30, 1e-9, 0.0, -1.0, math.nan, math.inf, "1e-3", True):
        with pytest.raises(ValueError, match=r"expected rtol >= 3.8e-06 \(32 eps of float32"):
            CNF(net, 2, rtol=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"expected atol >= 3.8e-06"):
        ff.flows.FFJORD(features=2, hidden=(8,), atol=1e-12)
    cnf = CNF(net, 2)
    with pytest.raises(ValueError, match=r"expected atol >= 3.8e-06"):
        cnf.atol = 1e-9
    assert cnf.atol == 1e-5  # unchanged by the refused value
    cnf.rtol = 4e-6
    x = torch.randn(8, 2)
    cnf.eval()
    with torch.no_grad():
        cnf(x)
    assert cnf.last_solve is not None and (cnf.last_solve.rtol, cnf.last_solve.atol) == (4e-6, 1e-5)
    cnf.train()
    with torch.no_grad():
        cnf(x)
    assert cnf.last_solve.rtol == 4e-6
    tight = tight_cnf(net, 2, rtol=1e-12, atol=1e-12)
    with float64_default():
        tight.rtol = 1e-13  # a float64 CNF takes it
    assert tight.rtol == 1e-13
    with pytest.raises(ValueError, match=r"rtol >= 7.1e-15 \(32 eps of float64"):
        tight.rtol = 1e-16
    with pytest.warns(UserWarning, match=r"rtol=1e-13, atol=1e-12 are below 3.8e-06 \(32 eps"):
        tight.float()  # never solved at float32's floor in silence
    with torch.no_grad():
        z, ladj = tight(x)
        x2, _ = tight.inverse(z)
    assert z.dtype == ladj.dtype == torch.float32 and torch.allclose(x2, x, atol=1e-4)
    floor = 32 * torch.finfo(torch.float32).eps
    assert tight.last_solve is not None and tight.last_solve.rtol == pytest.approx(floor)
    assert tight.last_solve.atol == pytest.approx(floor)
    fixed = CNF(net, 2, method="rk4", solver_steps=4)
    with torch.no_grad():
        fixed(x)
    assert fixed.last_solve is not None and fixed.last_solve.rtol is None  # no tolerance


# ---------------------------------------------------------------------------- flow matching
def _gaussian_field(x: Tensor, s: Tensor, m: Tensor, sd: Tensor) -> Tensor:
    """The marginal velocity of straight paths from ``N(m, diag sd^2)`` to ``N(0, I)``
    (independent pairs): ``-m + (s - (1 - s) sd^2) / ((1 - s)^2 sd^2 + s^2) (x - (1 - s) m)``."""
    s = s[:, None]
    var = (1 - s).square() * sd.square() + s.square()
    return -m + (s - (1 - s) * sd.square()) / var * (x - (1 - s) * m)


def test_the_closed_form_field_in_a_cnf_has_the_target_density() -> None:
    """The time convention: the optimal flow-matching field, integrated by the CNF from the
    data (t = 0) to the latent (t = T = 1), gives the data density exactly, and sampling
    (latent -> data) gives the data distribution."""
    m, sd = torch.tensor([1.5, -1.0], dtype=F64), torch.tensor([0.5, 1.5], dtype=F64)

    class Optimal(nn.Module):
        def forward(self, t: Tensor, z: Tensor, context: Tensor | None = None) -> Tensor:
            return _gaussian_field(z, t.expand(z.shape[0]), m, sd)

    flow = ff.Flow(
        tight_cnf(Optimal(), 2, rtol=1e-10, atol=1e-10), ff.distributions.StandardNormal(2)
    )
    flow.to(F64)
    target = torch.distributions.Independent(torch.distributions.Normal(m, sd), 1)
    x = target.sample((5,))
    assert torch.allclose(flow.log_prob(x), target.log_prob(x), atol=1e-8)
    xs = flow.sample(4000)
    assert torch.allclose(xs.mean(0), m, atol=0.1) and torch.allclose(xs.std(0), sd, atol=0.1)


@pytest.mark.slow
def test_flow_matching_learns_the_closed_form_field_and_density_of_gaussians() -> None:
    m, sd = torch.tensor([1.5, -1.0]), torch.tensor([0.5, 1.5])
    target = torch.distributions.Independent(torch.distributions.Normal(m, sd), 1)
    flow = ff.flows.FFJORD(features=2, hidden=(64, 64), rtol=4e-6, atol=4e-6)
    cnf = flow.bijection.bijections[0]
    assert isinstance(cnf, CNF)
    objective = FlowMatching()
    opt = torch.optim.Adam(flow.parameters(), 1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 2000)
    for _ in range(2000):
        loss = objective(flow, target.sample((256,)))
        opt.zero_grad()
        loss.value.backward()
        opt.step()
        sched.step()
    assert cnf.nfe_forward == 0  # no solve in training
    # The learned field against the optimum, on points of the path.
    x, z, s = target.sample((2000,)), torch.randn(2000, 2), torch.rand(2000) * 0.98 + 0.01
    xs = (1 - s[:, None]) * x + s[:, None] * z
    with torch.no_grad():
        err = (cnf.velocity(s, xs) - _gaussian_field(xs, s, m, sd)).square().sum(-1).mean()
    scale = _gaussian_field(xs, s, m, sd).square().sum(-1).mean()
    assert err / scale < 0.01, (err, scale)
    # The exact density of the trained CNF against the target's.
    test = target.sample((500,))
    with torch.no_grad():
        lp = flow.eval().log_prob(test)
    gap = (target.log_prob(test) - lp).mean()  # a KL estimate, >= 0 up to noise
    assert abs(gap) < 0.04, gap
    assert (target.log_prob(test) - lp).abs().mean() < 0.15


def test_flow_matching_ot_pairs_cheaper_and_checks_the_chain() -> None:
    from flowforge.train.losses import _ot_pairing

    x, z = torch.randn(64, 2), torch.randn(64, 2)
    p = _ot_pairing(x, z)
    assert sorted(p.tolist()) == list(range(64))
    assert (x - z[p]).square().sum() < (x - z).square().sum()
    with pytest.raises(TypeError, match="one CNF that is the last"):
        FlowMatching()(ff.flows.FFJORD(features=2, transforms=2, hidden=(4,)), x)
    cnf = CNF(ff.nn.ODENet(2, (4,)), 2)
    flow = ff.Flow(ff.Compose([ff.transforms.LULinear(2), cnf]), ff.distributions.StandardNormal(2))
    with pytest.raises(ValueError, match="cannot train the LULinear"):
        FlowMatching()(flow, x)
    fixed = ff.transforms.Standardize(torch.ones(2), torch.full((2,), 2.0))
    flow = ff.Flow(ff.Compose([fixed, cnf]), ff.distributions.StandardNormal(2))
    assert torch.isfinite(FlowMatching(sigma=0.1)(flow, x).value)


# ---------------------------------------------------------------------------- presets, fits
def test_ffjord_preset_with_context_and_blocks() -> None:
    flow = ff.flows.FFJORD(features=2, context=3, transforms=2, hidden=(8,), learn_time=True)
    assert ff.flows.PRESETS["ffjord"] is ff.flows.FFJORD
    assert flow.hparams["learn_time"] is True and flow.hparams["method"] == "dopri5"
    randomize(flow, 0.3)
    c = torch.randn(4, 3)
    x = flow.sample(5, c)
    assert x.shape == (5, 4, 2)
    xs, lp = flow.sample_and_log_prob(5, c)
    assert torch.allclose(lp, flow.log_prob(xs, c), atol=1e-3)


def _fit(flow: ff.Flow, objective: object, steps: int, lr: float) -> float:
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(flow.parameters(), lr)
    for _ in range(steps):
        loss = objective(flow, sample_toy("gaussian_mixture_2d", 256, g))  # type: ignore[operator]
        opt.zero_grad()
        loss.value.backward()
        opt.step()
    test = sample_toy("gaussian_mixture_2d", 2000, torch.Generator().manual_seed(1))
    with torch.no_grad():
        flow.eval()
        return float((toy_log_prob("gaussian_mixture_2d", test) - flow.log_prob(test)).mean())


@pytest.mark.slow
def test_short_fits_on_a_2d_mixture_by_both_objectives() -> None:
    """KL(target || model) estimated on test rows: from ~1.2 nats at the start to well
    below by maximum likelihood (regularised) and by flow matching."""
    start = _fit(ff.flows.FFJORD(features=2, hidden=(32, 32)), CNFLikelihood(), 0, 1e-2)
    ml = _fit(ff.flows.FFJORD(features=2, hidden=(32, 32)), CNFLikelihood(0.01, 0.01), 60, 2e-2)
    fm = _fit(ff.flows.FFJORD(features=2, hidden=(32, 32)), FlowMatching(ot=True), 400, 1e-2)
    assert start > 1.0 and ml < 0.35 and fm < 0.15, (start, ml, fm)


def test_evaluation_is_true_to_the_digits_whatever_the_training_tolerance() -> None:
    """A flow trained at rtol = atol = 10 reports its likelihood at 1e-5 in evaluation mode
    (the reported test NLL was 2.6124 at the training tolerance, 2.7596 at 1e-5)."""
    torch.manual_seed(0)
    loose = ff.flows.FFJORD(features=2, hidden=(16, 16), rtol=10.0, atol=10.0).double()
    with torch.no_grad():
        for p in loose.parameters():
            p.copy_(torch.randn_like(p) * 0.7)
    with float64_default():
        exact = ff.flows.FFJORD(features=2, hidden=(16, 16), rtol=1e-10, atol=1e-10)
    exact.load_state_dict(loose.state_dict())
    x = torch.randn(64, 2, dtype=torch.float64) * 1.5
    exact.eval()
    with torch.no_grad():
        ref = exact.log_prob(x)
        loose.train()
        trained_at = loose.log_prob(x)
        loose.eval()
        reported = loose.log_prob(x)
    assert (trained_at - ref).abs().mean() > 1e-3  # the training tolerance is visibly off
    assert (reported.mean() - ref.mean()).abs() < 1e-4  # true to 4 printed decimals


def test_fourier_time_features_equal_a_context_of_cosines_and_sines() -> None:
    # Reference: the same weights in a net without time features whose context carries
    # [cos(pi k t), sin(pi k t)] (the hyper layers' input is [t, features, c] either way).
    net = randomize(ff.nn.ODENet(3, (8, 8), context=0, activation="tanh", freqs=2), 0.5).to(F64)
    ref = ff.nn.ODENet(3, (8, 8), context=4, activation="tanh").to(F64)
    ref.flat.data.copy_(net.flat.data)
    t = torch.tensor(0.3, dtype=F64)
    z = torch.randn(5, 3, dtype=F64, requires_grad=True)
    k = torch.tensor([1.0, 2.0], dtype=F64) * math.pi
    c = torch.cat([torch.cos(t * k), torch.sin(t * k)]).expand(5, 4)
    f, jac_t = net.forward_and_jvp(t, z)  # one scalar time: gates folded
    assert torch.allclose(f, ref(t, z, c), atol=1e-12)
    assert torch.allclose(net(t.expand(5), z), f, atol=1e-12)  # per-row times
    jac = jacobian_autograd(ref(t, z, c), z, create_graph=False)
    assert torch.allclose(jac_t, jac.transpose(-1, -2), atol=1e-12)
    with pytest.raises(ValueError, match="freqs >= 0"):
        ff.nn.ODENet(3, freqs=-1)


def test_ffjord_runs_saved_before_issue_24_rebuild_with_their_initialisation() -> None:
    from flowforge.runs import ModelSpec, build_flow
    from flowforge.train.config import TrainConfig
    from flowforge.train.model import spec_for

    old = {"preset": "ffjord", "kwargs": {"features": 2, "hidden": [8]}, "kind": "toy"}
    spec = ModelSpec.from_dict({**old, "data_shape": [2]})
    assert spec.kwargs["zero_last"] is True and spec.kwargs["gate_bias"] == 0.0
    assert spec.kwargs["adjoint"] is True  # ... and train as they did (before stop 34)
    flow = build_flow(spec)
    net = next(m for m in flow.modules() if isinstance(m, ff.nn.ODENet))
    cnf = next(m for m in flow.modules() if isinstance(m, ff.transforms.CNF))
    assert cnf.adjoint is True
    w, _, _, hb = net.layers()[-1]
    assert torch.count_nonzero(w) == 0 and torch.all(hb[:2] == 0.0)
    # A new run stores today's defaults, and they survive the round trip.
    ds = type(
        "Toy",
        (),
        {"kind": "toy", "dim": 2, "event_shape": (2,), "standardizer": None, "context_dim": 0},
    )()
    new = spec_for(TrainConfig(flow="ffjord"), ds)
    assert new.kwargs["zero_last"] is False and new.kwargs["gate_bias"] == 3.0
    assert new.kwargs["adjoint"] is False
    assert ModelSpec.from_dict(new.to_dict()).kwargs == new.kwargs
