"""Checks against independent references for the bugs a review planted that the suite let
through: IWAE's ``- log K``, Glow's split priors, the dequantizer's coupling parities, Radial's
stable root in float32, and the presets' dtype under torch's default dtype."""

from __future__ import annotations

import math

import pytest
import torch

import flowforge as ff
from flowforge import vi
from registry import tight_cnf


@pytest.mark.parametrize("name", ["Planar", "Radial", "Sylvester"])
def test_vi_presets_follow_the_default_dtype(name: str) -> None:
    """``transforms/amortised.py`` cast to float32: the presets were float32 under a float64
    default and ``log_prob`` of float64 rows raised."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        flow = getattr(ff.flows, name)(features=3, transforms=2)
        assert {p.dtype for p in flow.parameters()} == {torch.float64}
        x, lp = flow.sample_and_log_prob(4)
        assert x.dtype == lp.dtype == torch.float64
        assert torch.isfinite(lp).all()
    finally:
        torch.set_default_dtype(before)


def test_iwae_is_exactly_log_z_when_q_is_the_normalised_target() -> None:
    """With ``q = p`` every weight is ``Z``: IWAE_K = log Z for every K (without its
    ``- log K`` it read log Z + log K, and the old test only checked iwae > elbo)."""
    act = ff.transforms.ActNorm(2)
    act.mark_initialized()  # the identity: q = N(0, I)
    flow = ff.Flow(act, ff.distributions.StandardNormal(2))
    log_z = 1.3

    def log_target(x: torch.Tensor) -> torch.Tensor:
        return -0.5 * x.pow(2).sum(-1) - math.log(2 * math.pi) + log_z

    for k in (1, 5, 64):
        loss = vi.IWAE(k)(flow, log_target, samples=16)
        assert float(loss.terms["iwae"]) == pytest.approx(log_z, abs=1e-5)
        assert float(loss.value.detach()) == pytest.approx(-log_z, abs=1e-5)


def _psis_k_reference(log_w: torch.Tensor) -> float:
    """PSIS k-hat written from Vehtari et al. (2024) and Zhang and Stephens (2009), in plain
    Python floats: the tail size, the exceedances, the profile-likelihood grid, the prior."""
    lw = sorted(float(v) for v in log_w)
    n = len(lw)
    m_tail = math.ceil(min(0.2 * n, 3 * math.sqrt(n)))
    cutoff = lw[-m_tail - 1]
    top = max(lw)
    x = sorted(math.exp(v - top) - math.exp(cutoff - top) for v in lw[-m_tail:])
    x = [v for v in x if v > 0]
    nx = len(x)
    m = 30 + int(math.sqrt(nx))
    q1 = x[int(nx / 4 + 0.5) - 1]
    thetas = [1 / x[-1] + (1 - math.sqrt(m / (j + 1 - 0.5))) / (3 * q1) for j in range(m)]
    ks = [sum(math.log1p(-t * v) for v in x) / nx for t in thetas]
    prof = [nx * (math.log(-t / k) - k - 1) for t, k in zip(thetas, ks)]
    top_p = max(prof)
    w = [math.exp(p - top_p) for p in prof]
    theta = sum(t * wi for t, wi in zip(thetas, w)) / sum(w)
    k = sum(math.log1p(-theta * v) for v in x) / nx
    return (nx * k + 10 * 0.5) / (nx + 10)


@pytest.mark.parametrize(("k_true", "n"), [(0.2, 20000), (0.5, 20000), (0.9, 300)])
def test_pareto_k_matches_an_independent_reference(k_true: float, n: int) -> None:
    g = torch.Generator().manual_seed(int(k_true * 10))
    u = torch.rand(n, generator=g, dtype=torch.float64)
    w = ((1 - u) ** -k_true - 1) / k_true  # a generalised Pareto with shape k_true
    got = vi.diagnostics.pareto_k(w.log())
    assert got == pytest.approx(_psis_k_reference(w.log()), abs=1e-9)
    assert abs(got - k_true) < 0.25  # and it measures the tail


def test_ess_and_log_evidence_error_match_their_definitions() -> None:
    g = torch.Generator().manual_seed(1)
    log_w = torch.randn(500, generator=g, dtype=torch.float64) * 0.8 + 0.3
    w = log_w.exp()
    ess = float(w.sum() ** 2 / (w**2).sum())  # Kish
    assert vi.diagnostics.effective_sample_size(log_w) == pytest.approx(ess, rel=1e-12)
    est = vi.diagnostics.log_evidence(log_w)
    assert est.value == pytest.approx(float(w.mean().log()), abs=1e-12)
    # delta method: sd(w) / (sqrt(n) mean(w)), sd with 1/n
    se = float(w.std(unbiased=False) / (math.sqrt(500) * w.mean()))
    assert est.stderr == pytest.approx(se, rel=1e-9)


class _Linear(torch.nn.Module):
    """``f(t, z) = (1 + t) A z``: the flow map to ``T`` is ``exp(c A)`` and its log-det
    ``c tr A``, with ``c = T + T^2 / 2``."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(a)

    def forward(self, t: torch.Tensor, z: torch.Tensor, context: object = None) -> torch.Tensor:
        return (1 + t) * (z @ self.a.T)


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_cnf_solves_linear_dynamics_in_closed_form(method: str) -> None:
    g = torch.Generator().manual_seed(2)
    a = torch.randn(3, 3, generator=g, dtype=torch.float64) * 0.6
    cnf = tight_cnf(_Linear(a), 3, time=0.7, method=method, rtol=1e-10, atol=1e-10,
                    solver_steps=200).double().eval()  # fmt: skip
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        z, ladj = cnf(x)
        back, ladj_inv = cnf.inverse(z)
        sampled = cnf.inverse_value(z)
    c = 0.7 + 0.7**2 / 2
    tol = 1e-9 if method == "dopri5" else 1e-6
    assert torch.allclose(z, x @ torch.linalg.matrix_exp(c * a).T, atol=tol)
    assert torch.allclose(ladj, torch.full((5,), c * float(a.trace()), dtype=a.dtype), atol=tol)
    assert torch.allclose(back, x, atol=tol) and torch.allclose(ladj_inv, -ladj, atol=tol)
    assert torch.allclose(sampled, x, atol=tol)


def test_radial_density_direction_is_accurate_in_float32_near_the_centre() -> None:
    """The positive root is taken without cancellation: near ``z0`` with a small ``alpha``
    the textbook ``(disc - q) / 2`` lost 3 digits in float32 (relative error 1.4e-3)."""
    layer = ff.transforms.Radial(3).double()
    with torch.no_grad():
        raw = layer.params.raw
        raw[layer.params.slot("alpha")] = math.log(math.expm1(1e-4))  # alpha = 1e-4
        raw[layer.params.slot("beta")] = 1.5
        raw[layer.params.slot("z0")] = 0.0  # float32 then holds x - z0 to full precision
    z0 = layer.alpha_beta()[0].detach()
    g = torch.Generator().manual_seed(3)
    d = torch.randn(64, 3, generator=g, dtype=torch.float64)
    x = (
        z0
        + d
        / d.norm(dim=-1, keepdim=True)
        * torch.logspace(-6, -3, 64, dtype=torch.float64)[:, None]
    )
    x = x.float().double()  # the same inputs in both precisions
    with torch.no_grad():
        ref, ref_ladj = layer(x)
        low, low_ladj = layer.float()(x.float())
    err = ((low.double() - ref).norm(dim=-1) / (ref - z0).norm(dim=-1)).max()
    assert err < 1e-4, float(err)
    assert torch.allclose(low_ladj.double(), ref_ladj, rtol=1e-4)


@pytest.mark.parametrize(("levels", "steps"), [(1, 2), (2, 3), (3, 1)])
def test_glow_builds_what_its_docstring_says(levels: int, steps: int) -> None:
    """Per level a squeeze and ``steps`` steps (ActNorm, 1x1 conv, coupling); after each level
    but the last a learned split prior (``levels - 2`` priors passed the suite)."""
    from flowforge.transforms import ActNorm, Affine, ChannelCoupling, Squeeze
    from flowforge.transforms.sigmoid_affine import SigmoidAffine

    flow = ff.flows.Glow(shape=(1, 16, 16), levels=levels, depth=steps, hidden=(8, 8))
    mods = list(flow.modules())
    couplings = [m for m in mods if isinstance(m, ChannelCoupling)]
    priors = [m for m in couplings if isinstance(m.transformer, Affine)]
    steps_ = [m for m in couplings if isinstance(m.transformer, SigmoidAffine)]
    assert len(priors) == levels - 1
    assert len(steps_) == levels * steps
    assert sum(isinstance(m, ActNorm) for m in mods) == levels * steps
    assert sum(isinstance(m, Squeeze) for m in mods) == levels
    assert sum(type(m).__name__ == "LUConv1x1" for m in mods) == levels * steps


@pytest.mark.parametrize("transforms", [2, 3])
def test_the_conv_noise_flow_transforms_every_pixel(transforms: int) -> None:
    """Couplings alternate parity: with random weights every pixel moves (all couplings on
    one parity left half of the pixels untouched)."""
    from flowforge.data.noise_flows import conv_noise_flow

    flow, encoder, _ = conv_noise_flow((2, 4, 4), transforms=transforms, hidden=8, features=3)
    with torch.no_grad():
        for p in [*flow.parameters(), *encoder.parameters()]:
            p.copy_(torch.randn_like(p) * 0.3)
    x = torch.randn(5, 2, 4, 4)
    with torch.no_grad():
        z, _ = flow.bijection(x, encoder(x))
    moved = ((z - x).abs() > 1e-6).all(0)  # (C, H, W): moved in every row
    assert bool(moved.all()), moved


def test_gathering_unequal_shards_drops_the_padding_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank 0 holds 3 rows, rank 1 one: the gather pads both to 3 for ``all_gather`` and must
    return exactly the 4 real rows in rank order (the collective is simulated: rank 1's
    side is what a second process would send)."""
    from flowforge.fit import distributed

    mine = torch.arange(6.0).reshape(3, 2)
    peer = torch.tensor([[10.0, 11.0]])
    calls = []

    def all_gather(out: list[torch.Tensor], t: torch.Tensor) -> None:
        calls.append(t.shape)
        if t.dtype == torch.long:  # the sizes
            out[0].copy_(t)
            out[1].fill_(peer.shape[0])
        else:  # the rows, padded to the largest shard
            out[0].copy_(t)
            out[1].zero_()
            out[1][: peer.shape[0]] = peer
            out[1][peer.shape[0] :] = -99.0  # whatever the padding holds

    monkeypatch.setattr(distributed.dist, "all_gather", all_gather)
    world = distributed.World(rank=0, size=2)
    got = distributed.gather_rows(mine, world)
    assert torch.equal(got, torch.cat([mine, peer]))
    assert len(calls) == 2
