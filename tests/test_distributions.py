"""Every base distribution on its own, with random (non-zero) parameters, in float64.

Each base is checked against ``torch.distributions`` (or a closed form written here): its
log-density, the moments of its reparameterised samples, the pathwise gradients of those
samples, shapes and dtype. The conditional base is checked per context, with the mean and
scale its network outputs for that context.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributions as td

import flowforge as ff

F64 = torch.float64
D, C, K = 4, 3, 3
N_MOMENTS = 100_000


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _away_from_zero(shape: tuple[int, ...], gen: torch.Generator, low: float = 0.5) -> torch.Tensor:
    """Random values with ``low <= |v| <= 2``: a dropped sign or term is visible in the moments."""
    mag = low + (2.0 - low) * torch.rand(shape, generator=gen, dtype=F64)
    sign = torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0).to(F64)
    return mag * sign


def diag(event_shape: int | tuple[int, ...] = D, seed: int = 0) -> ff.distributions.DiagNormal:
    base = ff.distributions.DiagNormal(event_shape).double()
    gen = _gen(seed)
    with torch.no_grad():
        base.loc.copy_(_away_from_zero(tuple(base.loc.shape), gen))
        base.log_scale.copy_(_away_from_zero(tuple(base.log_scale.shape), gen, low=0.2) / 3)
    return base


def mixture(features: int = D, seed: int = 0) -> ff.distributions.GaussianMixture:
    base = ff.distributions.GaussianMixture(features, K).double()
    gen = _gen(seed)
    with torch.no_grad():
        # Distinct weights (about 0.6, 0.1, 0.3 at K = 3), separated means, varied scales.
        base.logits.copy_(
            torch.tensor([1.0, -0.8, 0.3], dtype=F64)[:K]
            + 0.1 * torch.randn(K, generator=gen, dtype=F64)
        )
        base.loc.copy_(1.5 * _away_from_zero((K, features), gen))
        base.log_scale.copy_(0.4 * torch.randn(K, features, generator=gen, dtype=F64))
    return base


def conditional(seed: int = 0) -> ff.distributions.ConditionalDiagNormal:
    base = ff.distributions.ConditionalDiagNormal(D, context=C).double()
    gen = _gen(seed)
    with torch.no_grad():
        for p in base.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=F64))
    return base


def conditional_params(
    base: ff.distributions.ConditionalDiagNormal, c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and standard deviation the base's network gives for context ``c``: the
    first ``D`` outputs are the mean, the last ``D`` the log standard deviation."""
    out = base.net(c)
    loc, log_scale = out[..., :D], out[..., D:]
    assert bool((log_scale.abs() < 10).all())  # inside the clamp: the plain normal applies
    return loc, log_scale.exp()


def _assert_moments(z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Sample mean and standard deviation of ``z`` ``(N, *)`` within 6 standard errors
    (about 2 % of the standard deviation at ``N = 10^5``)."""
    n = z.shape[0]
    torch.testing.assert_close(z.mean(0), mean, rtol=0, atol=float(6 * std.max() / math.sqrt(n)))
    torch.testing.assert_close(z.std(0), std, rtol=6 / math.sqrt(2 * n), atol=0)


def _log_normal(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(z; loc, scale^2), written out."""
    return -0.5 * ((z - loc) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)


# ------------------------------------------------------------------------ StandardNormal
@pytest.mark.parametrize("event_shape", [(D,), (1, 3, 3)])
def test_standard_normal_log_prob_and_shapes(event_shape: tuple[int, ...]) -> None:
    base = ff.distributions.StandardNormal(event_shape).double()
    ref = td.Independent(td.Normal(torch.zeros(event_shape, dtype=F64), 1.0), len(event_shape))
    z = 2 * torch.randn(2, 5, *event_shape, dtype=F64)
    lp = base.log_prob(z)
    assert lp.shape == (2, 5) and lp.dtype == F64
    torch.testing.assert_close(lp, ref.log_prob(z), rtol=1e-12, atol=1e-12)
    assert base.rsample((2, 3)).shape == (2, 3, *event_shape)
    assert base.rsample(()).shape == event_shape


def test_standard_normal_samples() -> None:
    torch.manual_seed(1)
    base = ff.distributions.StandardNormal(D).double()
    z = base.rsample((N_MOMENTS,))
    assert z.dtype == F64
    _assert_moments(z, torch.zeros(D, dtype=F64), torch.ones(D, dtype=F64))


# ------------------------------------------------------------------------ DiagNormal
@pytest.mark.parametrize("event_shape", [(D,), (2, 3)])
def test_diag_normal_log_prob_against_torch(event_shape: tuple[int, ...]) -> None:
    base = diag(event_shape)
    assert bool((base.loc != 0).all()) and bool((base.log_scale != 0).all())
    ref = td.Independent(
        td.Normal(base.loc.detach(), base.log_scale.detach().exp()), len(event_shape)
    )
    z = 3 * torch.randn(7, 2, *event_shape, dtype=F64)
    lp = base.log_prob(z)
    assert lp.shape == (7, 2) and lp.dtype == F64
    torch.testing.assert_close(lp, ref.log_prob(z), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("event_shape", [(D,), (2, 3)])
def test_diag_normal_sample_moments_and_shapes(event_shape: tuple[int, ...]) -> None:
    torch.manual_seed(2)
    base = diag(event_shape, seed=3)
    z = base.rsample((N_MOMENTS,))
    assert z.shape == (N_MOMENTS, *event_shape) and z.dtype == F64
    _assert_moments(z.detach(), base.loc.detach(), base.log_scale.detach().exp())
    assert base.rsample((2, 3)).shape == (2, 3, *event_shape)
    assert base.rsample(()).shape == event_shape


def test_diag_normal_rsample_is_reparameterised() -> None:
    # z = loc + exp(log_scale) * eps: dz/dloc = 1 and dz/dlog_scale = z - loc, per sample.
    torch.manual_seed(4)
    base = diag()
    z = base.rsample((50,))
    assert z.requires_grad
    g_loc, g_log_scale = torch.autograd.grad(z.sum(), [base.loc, base.log_scale])
    torch.testing.assert_close(g_loc, torch.full((D,), 50.0, dtype=F64))
    torch.testing.assert_close(g_log_scale, (z - base.loc).sum(0).detach())


def test_diag_normal_moves_and_scales_the_standard_normal_draw() -> None:
    # Common random numbers: with the same seed, the draw is loc + scale * (the standard
    # normal's draw), increasing in the noise. (A flipped noise sign has the same law and
    # the same pathwise gradients; only this pins the map.)
    base = diag((2, 3))
    torch.manual_seed(14)
    eps = ff.distributions.StandardNormal((2, 3)).double().rsample((5,))
    torch.manual_seed(14)
    z = base.rsample((5,)).detach()
    torch.testing.assert_close(z, base.loc.detach() + base.log_scale.detach().exp() * eps)


def test_diag_normal_density_integrates_to_one() -> None:
    base = diag(1)
    grid = torch.linspace(-15, 15, 30001, dtype=F64).unsqueeze(-1)
    mass = torch.trapezoid(base.log_prob(grid).exp().detach(), grid.squeeze(-1))
    assert abs(mass.item() - 1.0) < 1e-6


# ------------------------------------------------------------------------ GaussianMixture
def _mixture_log_prob_by_hand(
    base: ff.distributions.GaussianMixture, z: torch.Tensor
) -> torch.Tensor:
    """log sum_k w_k prod_d N(z_d; mu_kd, s_kd), w = softmax(logits), by one log-sum-exp."""
    logits, loc, scale = base.logits.detach(), base.loc.detach(), base.log_scale.detach().exp()
    log_w = logits - torch.log(torch.exp(logits).sum())
    terms = []
    for k in range(logits.shape[0]):
        terms.append(log_w[k] + _log_normal(z, loc[k], scale[k]).sum(-1))
    a = torch.stack(terms, -1)  # (*, K)
    top = a.max(-1, keepdim=True).values
    return (top + torch.log(torch.exp(a - top).sum(-1, keepdim=True))).squeeze(-1)


def test_mixture_log_prob_against_log_sum_exp_and_torch() -> None:
    base = mixture()
    z = 2.5 * torch.randn(6, 5, D, dtype=F64)
    lp = base.log_prob(z)
    assert lp.shape == (6, 5) and lp.dtype == F64
    torch.testing.assert_close(lp, _mixture_log_prob_by_hand(base, z), rtol=1e-12, atol=1e-12)
    ref = td.MixtureSameFamily(
        td.Categorical(logits=base.logits.detach()),
        td.Independent(td.Normal(base.loc.detach(), base.log_scale.detach().exp()), 1),
    )
    torch.testing.assert_close(lp, ref.log_prob(z), rtol=1e-12, atol=1e-12)


def test_mixture_of_one_component_is_a_diag_normal() -> None:
    base = ff.distributions.GaussianMixture(D, 1).double()
    gen = _gen(5)
    with torch.no_grad():
        base.logits.fill_(0.7)  # any logit: one weight of one
        base.loc.copy_(_away_from_zero((1, D), gen))
        base.log_scale.copy_(0.3 * torch.randn(1, D, generator=gen, dtype=F64))
    ref = td.Independent(td.Normal(base.loc[0].detach(), base.log_scale[0].detach().exp()), 1)
    z = torch.randn(9, D, dtype=F64)
    torch.testing.assert_close(base.log_prob(z), ref.log_prob(z), rtol=1e-12, atol=1e-12)


def test_mixture_sample_moments_and_shapes() -> None:
    # Mean sum_k w_k mu_k, variance sum_k w_k (s_k^2 + mu_k^2) - mean^2: both depend on
    # the weights, so sampling components with the wrong weights moves them.
    torch.manual_seed(6)
    base = mixture(seed=7)
    w = torch.softmax(base.logits.detach(), -1).unsqueeze(-1)  # (K, 1)
    loc, scale = base.loc.detach(), base.log_scale.detach().exp()
    mean = (w * loc).sum(0)
    std = ((w * (scale**2 + loc**2)).sum(0) - mean**2).sqrt()
    z = base.rsample((N_MOMENTS,)).detach()
    assert z.shape == (N_MOMENTS, D) and z.dtype == F64
    _assert_moments(z, mean, std)
    # Each sample lies near one component: the share of samples closest to each
    # component's mean follows the weights (the means are well separated).
    nearest = ((z.unsqueeze(-2) - loc) / scale).square().sum(-1).argmin(-1)
    share = torch.bincount(nearest, minlength=K).to(F64) / N_MOMENTS
    torch.testing.assert_close(share, w.squeeze(-1), rtol=0, atol=0.03)
    assert base.rsample((2, 3)).shape == (2, 3, D)
    assert base.rsample(()).shape == (D,)


def test_mixture_rsample_is_reparameterised_in_means_and_scales() -> None:
    # Every sample comes from one component: d(sum z)/d loc summed over components is N per
    # dimension; the scales get a gradient; the discrete choice gives the weights none.
    torch.manual_seed(8)
    base = mixture()
    z = base.rsample((40,))
    assert z.requires_grad
    z.sum().backward()
    torch.testing.assert_close(base.loc.grad.sum(0), torch.full((D,), 40.0, dtype=F64))
    assert torch.isfinite(base.log_scale.grad).all() and base.log_scale.grad.abs().sum() > 0
    assert base.logits.grad is None or not bool(base.logits.grad.any())


def test_mixture_density_integrates_to_one() -> None:
    base = mixture(features=1, seed=9)
    grid = torch.linspace(-20, 20, 40001, dtype=F64).unsqueeze(-1)
    mass = torch.trapezoid(base.log_prob(grid).exp().detach(), grid.squeeze(-1))
    assert abs(mass.item() - 1.0) < 1e-6


# ------------------------------------------------------------------------ ConditionalDiagNormal
def test_conditional_log_prob_depends_on_the_context() -> None:
    base = conditional()
    c = torch.randn(2, C, dtype=F64)  # two contexts
    z = torch.randn(5, 1, D, dtype=F64).expand(5, 2, D)  # the same points under both
    lp = base.log_prob(z, c)
    assert lp.shape == (5, 2) and lp.dtype == F64
    loc, scale = conditional_params(base, c)
    ref = td.Independent(td.Normal(loc.detach(), scale.detach()), 1)
    torch.testing.assert_close(lp, ref.log_prob(z), rtol=1e-12, atol=1e-12)
    # The two contexts give two different densities of the same points.
    assert bool(((lp[:, 0] - lp[:, 1]).abs() > 1e-3).all())
    # And the context, not only the points, moves the density: a gradient reaches it.
    cc = c.clone().requires_grad_()
    (g,) = torch.autograd.grad(base.log_prob(z, cc).sum(), cc)
    assert bool((g != 0).all())


def test_conditional_with_a_user_network() -> None:
    torch.manual_seed(10)
    net = ff.nn.MLP(C, 2 * D, hidden=(8,)).double()
    with torch.no_grad():
        net.flat.normal_(0.0, 0.4)
    base = ff.distributions.ConditionalDiagNormal(D, context=C, net=net)
    c = torch.randn(6, C, dtype=F64)
    z = torch.randn(6, D, dtype=F64)
    loc, scale = conditional_params(base, c)
    ref = td.Independent(td.Normal(loc.detach(), scale.detach()), 1)
    torch.testing.assert_close(base.log_prob(z, c), ref.log_prob(z), rtol=1e-12, atol=1e-12)


def test_conditional_sample_moments_per_context() -> None:
    torch.manual_seed(11)
    base = conditional(seed=12)
    c = torch.randn(2, C, dtype=F64)
    loc, scale = (t.detach() for t in conditional_params(base, c))
    assert bool(((loc[0] - loc[1]).abs() > 0.05).any())
    # Samples of shape (n, B, D) for contexts (B, C): column b follows context b.
    z = base.rsample((N_MOMENTS, 2), c).detach()
    assert z.shape == (N_MOMENTS, 2, D) and z.dtype == F64
    for b in range(2):
        _assert_moments(z[:, b], loc[b], scale[b])
    # One context per sample, as a flow draws them.
    assert base.rsample((3,), c[:1].expand(3, C)).shape == (3, D)


def test_conditional_rsample_is_reparameterised() -> None:
    torch.manual_seed(13)
    base = conditional()
    c = torch.randn(30, C, dtype=F64)
    z = base.rsample((30,), c)
    loc, _ = conditional_params(base, c)
    lin = base.net
    assert isinstance(lin, torch.nn.Linear)
    (g_bias,) = torch.autograd.grad(z.sum(), [lin.bias])
    # dz/d(mean bias) = 1 per sample; dz/d(log-scale bias) = z - loc per sample.
    torch.testing.assert_close(g_bias[:D], torch.full((D,), 30.0, dtype=F64))
    torch.testing.assert_close(g_bias[D:], (z - loc).sum(0).detach())


def test_conditional_needs_a_context() -> None:
    base = conditional()
    with pytest.raises(ValueError, match="needs a context"):
        base.log_prob(torch.randn(2, D, dtype=F64))
    with pytest.raises(ValueError, match="needs a context"):
        base.rsample((2,))


# ------------------------------------------------------------------------ all bases
BASES = {
    "standard": lambda: ff.distributions.StandardNormal(D),
    "diag": lambda: ff.distributions.DiagNormal(D),
    "mixture": lambda: ff.distributions.GaussianMixture(D, K),
    "conditional": lambda: ff.distributions.ConditionalDiagNormal(D, context=C),
}


@pytest.mark.parametrize("name", list(BASES))
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_dtype_follows_the_module(name: str, dtype: torch.dtype) -> None:
    base = BASES[name]().to(dtype)
    c = torch.randn(3, C, dtype=dtype) if name == "conditional" else None
    z = base.rsample((3,), c)
    assert z.dtype == dtype and z.shape == (3, D)
    assert base.log_prob(z, c).dtype == dtype


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", list(BASES))
def test_device_follows_the_module_cuda(name: str) -> None:
    base = BASES[name]().double().cuda()
    c = torch.randn(3, C, dtype=F64, device="cuda") if name == "conditional" else None
    z = base.rsample((3,), c)
    assert z.device.type == "cuda" and z.dtype == F64
    lp = base.log_prob(z, c)
    assert lp.device.type == "cuda" and lp.shape == (3,)
    cpu = base.cpu()
    torch.testing.assert_close(
        lp.cpu(), cpu.log_prob(z.cpu(), None if c is None else c.cpu()), rtol=1e-12, atol=1e-12
    )
