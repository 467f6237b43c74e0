"""The value-only directions: ``inverse_value`` / ``forward_value`` and ``Flow.sample``.

Every registry entry (and its ``.inv``) gives the same value as the full direction in float64,
with and without gradients (the chain hooks and fused kernels fire in both), and samples drawn
through ``Flow.sample`` equal those of ``sample_and_log_prob`` (the full inverse) at the same
seed. A CNF's value-only solve integrates the state alone: no trace kernel runs, and it takes
no more function evaluations than the full solve. A user bijection with only ``forward`` and
``inverse`` still samples.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import Tensor

import flowforge as ff
import flowforge.transforms.cnf_solve as cnf_solve
import flowforge.transforms.continuous as continuous
from registry import REGISTRY, Case, build, randomize, tight_cnf

F64 = torch.float64
NAMES = sorted(REGISTRY)
PARAMS = [(n, inv) for n in NAMES for inv in (False, True)]
IDS = [f"{n}{'-inv' if inv else ''}" for n, inv in PARAMS]
CNF_NAMES = [n for n in NAMES if n.startswith("cnf")]


@functools.cache
def _directions(name: str) -> frozenset[str]:
    with torch.random.fork_rng():  # at collection: the same entries whatever the RNG state
        torch.manual_seed(0)
        return REGISTRY[name]().directions


def _has(name: str, inverted: bool, direction: str) -> bool:
    swap = {"forward": "inverse", "inverse": "forward"}
    return (swap[direction] if inverted else direction) in _directions(name)


def _tol(name: str) -> float:
    """CNFs agree to their solver's accuracy (rtol = atol = 1e-12), the rest to rounding."""
    return 1e-8 if name.startswith("cnf") else 1e-12


def _setup(name: str, inverted: bool, n: int = 6) -> tuple[ff.Bijection, Tensor, Tensor, Case]:
    """The bijection under test, valid data ``x`` and latents ``z`` of it, and the case."""
    case = build(name, F64)
    b = case.bijection
    c = torch.randn(n, case.context, dtype=F64) if case.context else None
    data = case.draw(n) if "forward" in case.directions else None
    with torch.no_grad():
        latent = b(data, c)[0] if data is not None else case.draw_latent(n)
    if inverted:  # the data of b.inv is the latent of b
        return b.inv, latent, data if data is not None else latent, case
    return b, data if data is not None else latent, latent, case


def _context(case: Case, n: int = 6) -> Tensor | None:
    torch.manual_seed(11)
    return torch.randn(n, case.context, dtype=F64) if case.context else None


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize(("name", "inverted"), PARAMS, ids=IDS)
def test_value_only_equals_the_full_direction(name: str, inverted: bool, grad: bool) -> None:
    b, x, z, case = _setup(name, inverted)
    c = _context(case)
    tol = _tol(name)
    with torch.set_grad_enabled(grad):
        if _has(name, inverted, "inverse"):
            full = b.inverse(z, c)[0]
            value = b.inverse_value(z, c)
            assert value.shape == full.shape == x.shape
            assert torch.allclose(value, full, atol=tol, rtol=0), (value - full).abs().max()
        if _has(name, inverted, "forward"):
            full = b(x, c)[0]
            value = b.forward_value(x, c)
            assert value.shape == full.shape == z.shape
            assert torch.allclose(value, full, atol=tol, rtol=0), (value - full).abs().max()


@pytest.mark.parametrize(("name", "inverted"), PARAMS, ids=IDS)
def test_missing_direction_stays_missing(name: str, inverted: bool) -> None:
    """A direction the bijection lacks is refused by its value-only form too."""
    b, x, z, case = _setup(name, inverted)
    c = _context(case)
    if not _has(name, inverted, "inverse"):
        with pytest.raises(NotImplementedError, match="direction"):
            b.inverse_value(z, c)
    if not _has(name, inverted, "forward"):
        with pytest.raises(NotImplementedError, match="direction"):
            b.forward_value(x, c)


GRAD_NAMES = ["preset-realnvp", "preset-iaf", "preset-maf", "multiscale-context", *CNF_NAMES]


@pytest.mark.parametrize("name", GRAD_NAMES)
def test_value_only_gradients_equal_the_full_direction(name: str) -> None:
    """``rsample`` backpropagates through the value-only inverse: same parameter gradients."""
    b, _, z, case = _setup(name, False, n=4)
    c = _context(case, 4)
    params = [p for p in b.parameters() if p.requires_grad]
    w = torch.randn(z.shape[0], *b.event_shape, dtype=F64)
    g_full = torch.autograd.grad((b.inverse(z, c)[0] * w).sum(), params)
    g_value = torch.autograd.grad((b.inverse_value(z, c) * w).sum(), params)
    for a, v in zip(g_full, g_value):
        assert torch.allclose(v, a, atol=1e-7, rtol=1e-7), (v - a).abs().max()


def _flow(case: Case) -> ff.Flow:
    b = case.bijection
    base = ff.distributions.StandardNormal(b.forward_shape(b.event_shape)).to(F64)
    return ff.Flow(b, base, context=case.context)


SAMPLING = [n for n in NAMES if "inverse" in _directions(n)]


@pytest.mark.parametrize("name", SAMPLING)
def test_flow_sample_equals_the_full_inverse(name: str) -> None:
    """``Flow.sample`` (value-only) and ``sample_and_log_prob`` (the full inverse) draw the same
    samples at the same seed, context batch included."""
    case = build(name, F64)
    flow = _flow(case)
    ctx = torch.randn(2, case.context, dtype=F64) if case.context else None
    torch.manual_seed(3)
    x = flow.sample(3, ctx)
    torch.manual_seed(3)
    with torch.no_grad():
        ref, _ = flow.sample_and_log_prob(3, ctx)
    assert x.shape == ref.shape == (3, *(() if ctx is None else (2,)), *flow.event_shape)
    assert torch.allclose(x, ref, atol=_tol(name), rtol=0), (x - ref).abs().max()


# ------------------------------------------------------------------------------ CNF


class TraceComputed(Exception):
    """Raised by the patched trace kernels (not an AssertionError: the solver catches those)."""


def _no_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every way a CNF computes a trace, Jacobian or probe raises."""

    def boom(*args: object, **kwargs: object) -> None:
        raise TraceComputed("a trace was computed")

    for name in ("exact_trace", "hutchinson_trace", "jacobian_autograd", "jvp_autograd"):
        monkeypatch.setattr(cnf_solve, name, boom)
    monkeypatch.setattr(continuous, "trace_noise", boom)
    monkeypatch.setattr(ff.nn.ODENet, "forward_and_jvp", boom)


class ScaledODENet(ff.nn.ODENet):
    """Not exactly an ODENet: the CNF takes the autograd trace path for it."""

    def forward(self, t: Tensor, z: Tensor, context: Tensor | None = None) -> Tensor:
        return 0.5 * super().forward(t, z, context)


def _cnf(net_cls: type[ff.nn.ODENet], trace: str, context: int = 0) -> ff.transforms.CNF:
    torch.manual_seed(5)
    net = net_cls(3, (8,), context=context, zero_last=False)
    cnf = tight_cnf(net, 3, context=context, time=0.7, trace=trace, rtol=1e-10, atol=1e-10)  # type: ignore[arg-type]
    return randomize(cnf, 0.5).to(F64)  # type: ignore[return-value]


@pytest.mark.parametrize("net_cls", [ff.nn.ODENet, ScaledODENet], ids=["fused", "autograd"])
@pytest.mark.parametrize("mode", ["eval-exact", "train-hutchinson", "train-exact"])
def test_cnf_value_only_computes_no_trace(
    monkeypatch: pytest.MonkeyPatch, net_cls: type[ff.nn.ODENet], mode: str
) -> None:
    cnf = _cnf(net_cls, "exact" if mode.endswith("exact") else "hutchinson", context=2)
    cnf.train(mode.startswith("train"))
    flow = ff.Flow(cnf, ff.distributions.StandardNormal(3).to(F64), context=2)
    z, c = torch.randn(5, 3, dtype=F64), torch.randn(5, 2, dtype=F64)
    with torch.no_grad():
        x_full = cnf.inverse(z, c)[0]
        z_full = cnf(x_full, c)[0]
    _no_trace(monkeypatch)
    with torch.no_grad():
        with pytest.raises(TraceComputed):  # the patch reaches the solver
            cnf.inverse(z, c)
        x = cnf.inverse_value(z, c)
        assert cnf.last_solve is not None and cnf.last_solve.value_only
        with cnf.regularizing():
            z2 = cnf.forward_value(x, c)
        assert cnf.last_solve.kinetic is None and cnf.last_solve.jacobian is None
        samples = flow.sample(4, c[:2])
    assert torch.allclose(x, x_full, atol=1e-8) and torch.allclose(z2, z_full, atol=1e-8)
    assert samples.shape == (4, 2, 3) and torch.isfinite(samples).all()
    # With gradients (rsample, the adjoint) no trace is computed either.
    loss = flow.rsample(4, c[:2]).square().sum()
    loss.backward()
    assert cnf.nfe_backward > 0 and cnf.net.flat.grad is not None


def test_cnf_value_only_takes_no_more_evaluations() -> None:
    """Error control on the state alone: never more steps than the full solve; here the
    log-determinant's error sets the full solve's steps, so strictly fewer."""
    case = build("cnf-context-learned-time", F64)
    cnf = case.bijection
    assert isinstance(cnf, ff.transforms.CNF)
    z, c = torch.randn(6, 5, dtype=F64), torch.randn(6, case.context, dtype=F64)
    with torch.no_grad():
        cnf.inverse(z, c)
        full = cnf.nfe_forward
        cnf.inverse_value(z, c)
        value = cnf.nfe_forward
    assert 0 < value < full, (value, full)
    cnf = _cnf(ff.nn.ODENet, "exact")
    with torch.no_grad():
        cnf.inverse(z[:, :3])
        full = cnf.nfe_forward
        cnf.inverse_value(z[:, :3])
    assert 0 < cnf.nfe_forward <= full


def test_cnf_value_only_keeps_the_tolerances() -> None:
    """Samples equal the full inverse's to the solver's accuracy at loose tolerances too."""
    cnf = _cnf(ff.nn.ODENet, "exact")
    cnf.rtol = cnf.atol = 1e-4
    z = torch.randn(64, 3, dtype=F64)
    with torch.no_grad():
        full = cnf.inverse(z)[0]
        value = cnf.inverse_value(z)
        empty = cnf.inverse_value(z[:0])
    err = (value - full).abs().max()
    assert 0 <= err < 1e-3, err
    assert empty.shape == (0, 3)


# -------------------------------------------------------------------- user bijections


class Shift(ff.Bijection):
    """A user bijection with ``forward`` and ``inverse`` only (no value-only methods)."""

    def __init__(self, features: int) -> None:
        super().__init__(features)
        self.shift = torch.nn.Parameter(torch.randn(features))
        self.inverse_calls = 0

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x + self.shift, x.new_zeros(x.shape[:-1])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self.inverse_calls += 1
        return z - self.shift, z.new_zeros(z.shape[:-1])


def test_user_bijection_without_value_only_methods_samples() -> None:
    torch.manual_seed(7)
    shift = Shift(3).double()
    lu = randomize(ff.transforms.LULinear(3)).double()
    for bij in (shift, ff.Compose([lu, shift, ff.transforms.ReversePermutation(3)]), shift.inv):
        flow = ff.Flow(bij, ff.distributions.StandardNormal(3).to(F64))
        calls = shift.inverse_calls
        torch.manual_seed(1)
        x = flow.sample(5)
        torch.manual_seed(1)
        z = torch.randn(5, 3, dtype=F64)
        with torch.no_grad():
            ref = bij.inverse(z)[0]
        assert torch.allclose(x, ref, atol=1e-12)
        assert shift.inverse_calls > calls or bij is shift.inv  # .inv samples by forward
    assert torch.allclose(shift.inv.inverse_value(z), z + shift.shift)


# ----------------------------------------------------------------- fused kernels fire


def _spy(monkeypatch: pytest.MonkeyPatch, module: object, name: str, calls: list[str]) -> None:
    fn = getattr(module, name)

    def wrapped(*args: object, **kwargs: object) -> object:
        calls.append(name)
        return fn(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


def test_default_presets_still_sample_through_the_fused_kernels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import flowforge.transforms.autoregressive as ar
    import flowforge.transforms.coupling as cp

    calls: list[str] = []
    _spy(monkeypatch, cp, "coupling_inference", calls)
    _spy(monkeypatch, ar, "made_affine_inverse_inference", calls)
    _spy(monkeypatch, ar, "made_affine_chain", calls)
    torch.manual_seed(0)
    ff.flows.RealNVP(features=4, transforms=2, hidden=(8,)).sample(3)
    assert calls and set(calls) == {"coupling_inference"}
    calls.clear()
    ff.flows.MAF(features=4, transforms=2, hidden=(8,)).sample(3)
    assert calls and set(calls) == {"made_affine_inverse_inference"}
    calls.clear()
    # IAF's rsample trains through Compose's chain hook: the whole chain is one fused node.
    ff.flows.IAF(features=4, transforms=2, hidden=(8,)).rsample(3).sum().backward()
    assert calls == ["made_affine_chain"]


# ------------------------------------------------ value-only spline and its conditioners

SPLINE = ff.transforms.RationalQuadraticSpline


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize("n", [7, 40_000], ids=["small", "chunked"])
def test_spline_value_equals_the_full_spline(inverse: bool, n: int) -> None:
    """Inputs inside and outside the interval, every bin, both layouts, chunked batches."""
    from flowforge.functional.splines import rational_quadratic_spline as full
    from flowforge.functional.splines import rational_quadratic_spline_value as value

    torch.manual_seed(2)
    x = 3.0 * torch.randn(n, 2, dtype=F64)  # some beyond bound = 2.5
    p = 2.0 * torch.randn(n, 2, 3 * 6 - 1, dtype=F64)
    major = p.permute(2, 1, 0).contiguous().permute(2, 1, 0)  # (3K - 1, D, N) in memory
    for params in (p, major):
        y = value(x, params, 2.5, inverse)
        assert torch.equal(y, full(x, params, 2.5, inverse)[0])
        back = full(y, params, 2.5, not inverse)[0]  # the other direction undoes it
        assert torch.allclose(back, x, atol=1e-9, rtol=0), (back - x).abs().max()
    pg = p[:7].clone().requires_grad_()
    yg = value(x[:7], pg, 2.5, inverse)
    assert yg.requires_grad and torch.equal(yg, full(x[:7], pg, 2.5, inverse)[0])


def _layer(kind: str, context: int) -> ff.Bijection:
    torch.manual_seed(4)
    t = SPLINE(5, 2.0)
    if kind == "coupling":
        net = ff.nn.MLP(2 + context, 3 * t.params_per_dim, (16,))
        b: ff.Bijection = ff.transforms.Coupling(
            [True, False, True, False, False], t, net, context=context
        )
    else:
        b = ff.transforms.MaskedAutoregressive(
            t, ff.nn.MADE(5, t.params_per_dim, (16,), context=context)
        )
    return randomize(b, 0.5).double()  # type: ignore[return-value]


@pytest.mark.parametrize("plain", [False, True], ids=["kernels", "plain"])
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("context", [0, 3], ids=["no_context", "context"])
@pytest.mark.parametrize("kind", ["coupling", "ar"])
def test_spline_conditioner_value_equals_the_full_inverse(
    monkeypatch: pytest.MonkeyPatch, kind: str, context: int, grad: bool, plain: bool
) -> None:
    """Coupling and MAF with a spline: ``inverse_value`` equals ``inverse(z)[0]`` in float64,
    and it calls the value-only spline, never the full one."""
    import flowforge.transforms.spline as spline

    b = _layer(kind, context)
    z = 2.0 * torch.randn(6, 5, dtype=F64)
    c = torch.randn(6, context, dtype=F64) if context else None
    block = ff.functional.plain_modules if plain else torch.enable_grad
    with block(), torch.set_grad_enabled(grad):
        full = b.inverse(z, c)[0]
        monkeypatch.setattr(spline, "rational_quadratic_spline", _raise)  # value-only spline
        value = b.inverse_value(z, c)
    assert torch.allclose(value, full, atol=1e-12, rtol=0), (value - full).abs().max()
    assert value.requires_grad == grad


def _raise(*args: object, **kwargs: object) -> None:
    raise TraceComputed("the spline's log-determinant was computed")


@pytest.mark.parametrize("kind", ["coupling", "ar"])
def test_spline_conditioner_value_in_row_chunks(kind: str) -> None:
    """A batch large enough to run in row chunks gives the full inverse's value."""
    b = _layer(kind, 0)
    z = torch.randn(30_000, 5, dtype=F64)
    with torch.no_grad():
        value, full = b.inverse_value(z), b.inverse(z)[0]
    assert torch.allclose(value, full, atol=1e-12, rtol=0), (value - full).abs().max()


def test_subclass_overriding_inverse_samples_by_its_inverse() -> None:
    """A subclass that overrides ``inverse`` (not ``inverse_value``) gets its ``inverse``."""

    class Doubled(SPLINE):
        def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
            x, ladj = super().inverse(y, params)
            return 2.0 * x, ladj

    class Shifted(ff.transforms.Coupling):
        def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
            x, ladj = super().inverse(z, context)
            return x + 1.0, ladj

    p, y = torch.randn(4, 3, 3 * 4 - 1, dtype=F64), torch.randn(4, 3, dtype=F64)
    assert torch.equal(Doubled(4).inverse_value(y, p), Doubled(4).inverse(y, p)[0])
    torch.manual_seed(0)
    t = SPLINE(4)
    layer = Shifted([True, False], t, ff.nn.MLP(1, t.params_per_dim, (8,))).double()
    z = torch.randn(4, 2, dtype=F64)
    with torch.no_grad():
        assert torch.equal(layer.inverse_value(z), layer.inverse(z)[0])
