"""Every preset as a density model and as a torch distribution."""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any

import pytest
import torch
import torch.distributions as td
from torch.distributions import Distribution

import flowforge as ff
from registry import float64_default, randomize

# The vector presets (``features=``); the image presets (``shape=``) have tests of their own.
PRESETS = sorted(
    name
    for name, cls in ff.flows.PRESETS.items()
    if "features" in inspect.signature(cls).parameters
)
D, C = 4, 3


def make(name: str, context: int = 0, **kw) -> ff.Flow:
    if name == "tarflow":  # its own size arguments (blocks, layers, width, heads)
        return ff.flows.TarFlow(features=D, context=context, blocks=2, width=16, heads=2, **kw)
    if name == "ffjord":  # an ODE solve: tolerances tight enough for float64 comparisons,
        kw = {"rtol": 1e-10, "atol": 1e-10, **kw}  # which only a float64 CNF accepts
        with float64_default():  # then in float32 like the others (solved at float32's floor)
            flow = ff.flows.FFJORD(features=D, context=context, transforms=2, hidden=(16, 16), **kw)
        with pytest.warns(UserWarning, match="below 3.8e-06"):  # which the cast says
            return flow.float()
    return ff.flows.PRESETS[name](features=D, context=context, transforms=2, hidden=(16, 16), **kw)


def ready(flow: ff.Flow, scale: float = 0.2) -> ff.Flow:
    """Random parameters, data-initialised layers done, eval mode."""
    randomize(flow, scale)
    return flow.eval()


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("context", [0, C])
def test_log_prob_shape_and_finite(name: str, context: int) -> None:
    flow = ready(make(name, context))
    x = torch.randn(2, 5, D)
    c = torch.randn(2, 5, context) if context else None
    lp = flow.log_prob(x, c)
    assert lp.shape == (2, 5) and torch.isfinite(lp).all()


@pytest.mark.parametrize("name", PRESETS)
def test_every_parameter_gets_a_gradient(name: str) -> None:
    flow = ready(make(name, C)).train()
    loss = -flow.log_prob(torch.randn(16, D), torch.randn(16, C)).mean()
    loss.backward()
    for pname, p in flow.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", ["iaf", "maf", "nsf"])
def test_first_dimension_depends_on_the_context(name: str) -> None:
    # The dimension of degree 1 has no earlier inputs: its transform must still see the
    # context (a one-dimensional conditional flow is then a conditional density).
    flow = ff.flows.PRESETS[name](features=1, context=C, transforms=2, hidden=(8, 8))
    randomize(flow, 0.5)
    flow.eval()
    c = torch.randn(3, C, requires_grad=True)
    (g,) = torch.autograd.grad(flow.log_prob(torch.randn(3, 1), c).sum(), c)
    assert bool((g != 0).all()), name


@pytest.mark.parametrize("name", PRESETS)
def test_state_dict_round_trip(name: str) -> None:
    flow = ready(make(name, C))
    other = make(name, C).eval()
    other.load_state_dict(flow.state_dict())
    x, c = torch.randn(6, D), torch.randn(6, C)
    assert torch.allclose(flow.log_prob(x, c), other.log_prob(x, c))


@pytest.mark.parametrize("name", PRESETS)
def test_sample_shapes(name: str) -> None:
    flow = ready(make(name))
    assert flow.sample(7).shape == (7, D)
    assert flow.sample((2, 3)).shape == (2, 3, D)
    cflow = ready(make(name, C))
    assert cflow.sample(7, torch.randn(5, C)).shape == (7, 5, D)
    assert cflow.sample(7, torch.randn(C)).shape == (7, D)
    x, lp = cflow.sample_and_log_prob(4, torch.randn(5, C))
    assert x.shape == (4, 5, D) and lp.shape == (4, 5)
    assert not flow.sample(3).requires_grad


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("context", [0, C])
def test_sample_and_log_prob_agree_with_log_prob(name: str, context: int) -> None:
    flow = ready(make(name, context)).double()
    c = torch.randn(5, context, dtype=torch.float64) if context else None
    x, lp = flow.sample_and_log_prob(8, c)
    assert torch.allclose(lp, flow.log_prob(x, c), atol=1e-8)


@pytest.mark.parametrize("name", PRESETS)
def test_sample_and_log_prob_is_reparameterised(name: str) -> None:
    flow = ready(make(name))
    x, lp = flow.sample_and_log_prob(8)
    (x.sum() + lp.sum()).backward()
    grads = [p.grad for p in flow.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", PRESETS)
def test_distribution_is_a_torch_distribution(name: str) -> None:
    flow = ready(make(name, C))
    c = torch.randn(5, C)
    d = flow.distribution(c)
    assert isinstance(d, Distribution)
    assert d.batch_shape == (5,) and d.event_shape == (D,)
    x = d.rsample((3,))
    assert x.shape == (3, 5, D) and x.requires_grad
    assert d.sample((2,)).shape == (2, 5, D)
    lp = d.log_prob(x)
    assert lp.shape == (3, 5)
    assert torch.allclose(lp, flow.log_prob(x, c.expand(3, 5, C)))
    assert flow(c).event_shape == (D,)
    # Code that only knows torch distributions: a Monte Carlo KL to a normal.
    ref = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(D), 1.0), 1)
    kl = (d.log_prob(x) - ref.log_prob(x)).mean()
    assert torch.isfinite(kl)
    u = ready(make(name)).distribution()
    assert u.batch_shape == () and u.sample().shape == (D,)


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("randomized", [False, True])
def test_extreme_inputs_stay_finite(name: str, randomized: bool) -> None:
    flow = make(name)
    if randomized:
        ready(flow, 0.1)
    flow.eval()
    x = torch.tensor([[1e4, -1e4, 3.0, 0.0], [-1e4, 1e4, 1e4, -1e4], [1e3, 0.5, -1e3, 1e-3]])
    x.requires_grad_(True)
    lp = flow.log_prob(x)
    assert torch.isfinite(lp).all(), lp
    lp.sum().backward()
    assert torch.isfinite(x.grad).all()
    for p in flow.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()
    # Without gradients (the inference kernels): the same values, finite.
    with torch.no_grad():
        lp_fast = flow.log_prob(x)
        samples = flow.sample(64)
    torch.testing.assert_close(lp_fast, lp.detach(), rtol=1e-5, atol=1e-3)
    assert torch.isfinite(samples).all()


def test_wrong_feature_count_names_shapes() -> None:
    flow = make("maf")
    with pytest.raises(ValueError, match=r"expected x of shape \(\*, 4\), got \(32, 7\)"):
        flow.log_prob(torch.randn(32, 7))


def test_context_errors_name_shapes() -> None:
    cflow = make("nsf", C)
    with pytest.raises(ValueError, match=r"expected a context of shape \(\*, 3\), got None"):
        cflow.log_prob(torch.randn(2, D))
    with pytest.raises(ValueError, match=r"expected a context of shape \(\*, 3\), got \(2, 5\)"):
        cflow.log_prob(torch.randn(2, D), torch.randn(2, 5))
    with pytest.raises(ValueError, match="unconditional"):
        make("nsf").log_prob(torch.randn(2, D), torch.randn(2, C))
    with pytest.raises(ValueError, match=r"expected a context"):
        cflow.sample(3)


def test_bad_preset_arguments() -> None:
    with pytest.raises(ValueError, match="features >= 2"):
        ff.flows.RealNVP(features=1)
    with pytest.raises(ValueError, match="transforms >= 1"):
        ff.flows.MAF(features=3, transforms=0)
    with pytest.raises(ValueError, match="bins >= 1"):
        ff.flows.NSF(features=3, bins=0)


def test_missing_direction_is_a_clear_error() -> None:
    class OnlyForward(ff.Bijection):
        def forward(self, x, context=None):
            return x, x.new_zeros(x.shape[:-1])

    b = OnlyForward(3)
    with pytest.raises(NotImplementedError, match="OnlyForward has no inverse"):
        b.inverse(torch.zeros(1, 3))
    with pytest.raises(NotImplementedError, match="OnlyForward has no inverse"):
        b.inv(torch.zeros(1, 3))


@pytest.mark.parametrize("grad", [False, True])
def test_maf_samples_in_d_passes_iaf_in_one(grad: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # Count the network passes at each path's entry: the plain module call (and its
    # one-dimension form in D-pass inversions), the fused
    # training chain (one pass per layer), the inference kernel (one) and the inverse
    # inference kernel (one per dimension it fixes).
    import flowforge.transforms.autoregressive as ar
    from flowforge.functional.made_affine import MadeAffineChain

    maf, iaf = make("maf").eval(), make("iaf").eval()
    calls = {"n": 0}
    made_forward, inference = ff.nn.MADE.forward, ar.made_affine_inference
    forward_dim = ff.nn.MADE.forward_dim
    inverse_inference = ar.made_affine_inverse_inference
    chain_forward = MadeAffineChain.forward

    def count_made(self: ff.nn.MADE, *args: Any, **kw: Any) -> torch.Tensor:
        calls["n"] += 1
        return made_forward(self, *args, **kw)

    def count_dim(self: ff.nn.MADE, *args: Any, **kw: Any) -> torch.Tensor:
        calls["n"] += 1
        return forward_dim(self, *args, **kw)

    def count_inference(*args: Any, **kw: Any) -> Any:
        calls["n"] += 1
        return inference(*args, **kw)

    def count_inverse(*args: Any, **kw: Any) -> Any:
        calls["n"] += len(args[4])  # the order of the dimensions to fix
        return inverse_inference(*args, **kw)

    def count_chain(ctx: Any, x: Any, context: Any, specs: list[Any], *flats: Any) -> Any:
        calls["n"] += len(specs)
        return chain_forward(ctx, x, context, specs, *flats)

    monkeypatch.setattr(ff.nn.MADE, "forward", count_made)
    monkeypatch.setattr(ff.nn.MADE, "forward_dim", count_dim)
    monkeypatch.setattr(ar, "made_affine_inference", count_inference)
    monkeypatch.setattr(ar, "made_affine_inverse_inference", count_inverse)
    monkeypatch.setattr(MadeAffineChain, "forward", staticmethod(count_chain))
    with torch.set_grad_enabled(grad):
        for flow, density, sampling in [(maf, 1, D), (iaf, D, 1)]:
            calls["n"] = 0
            flow.log_prob(torch.randn(3, D))
            assert calls["n"] == 2 * density  # two layers
            calls["n"] = 0
            flow.sample(3)
            assert calls["n"] == 2 * sampling
            calls["n"] = 0
            flow.sample_and_log_prob(3)
            assert calls["n"] == 2 * sampling


@pytest.mark.parametrize("name", PRESETS)
def test_dtype_follows_parameters(name: str) -> None:
    flow = ready(make(name, C)).double()
    c = torch.randn(3, C, dtype=torch.float64)
    assert flow.sample(2, c).dtype == torch.float64
    assert flow.log_prob(torch.randn(3, D, dtype=torch.float64), c).dtype == torch.float64
    x, lp = flow.sample_and_log_prob(2, c)
    assert x.dtype == lp.dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", PRESETS)
def test_dtype_and_device_follow_parameters_cuda(name: str) -> None:
    flow = ready(make(name, C)).double()
    x = torch.randn(5, D, dtype=torch.float64)
    c = torch.randn(5, C, dtype=torch.float64)
    on_cpu = flow.log_prob(x, c).detach()
    flow = flow.cuda()
    xg, cg = x.cuda(), c.cuda()
    lp = flow.log_prob(xg, cg)
    assert lp.device.type == "cuda" and lp.dtype == torch.float64
    torch.testing.assert_close(lp.detach().cpu(), on_cpu, rtol=1e-9, atol=1e-9)
    s = flow.sample(2, cg)
    assert s.device.type == "cuda" and s.dtype == torch.float64 and s.shape == (2, 5, D)
    xs, lps = flow.sample_and_log_prob(2, cg)
    assert xs.device.type == lps.device.type == "cuda"
    assert xs.dtype == lps.dtype == torch.float64
    torch.testing.assert_close(lps, flow.log_prob(xs, cg.expand(2, 5, C)), rtol=1e-8, atol=1e-8)
    with torch.no_grad():  # the inference kernels
        torch.testing.assert_close(flow.log_prob(xg, cg).cpu(), on_cpu, rtol=1e-9, atol=1e-9)


N_LATENT = 20_000


def _moments(z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Sample mean and standard deviation within 6 standard errors."""
    n = z.shape[0]
    torch.testing.assert_close(z.mean(0), mean, rtol=0, atol=float(6 * std.max() / math.sqrt(n)))
    torch.testing.assert_close(z.std(0), std, rtol=6 / math.sqrt(2 * n), atol=0)


@pytest.mark.parametrize("base", ["diag", "mixture"])
def test_bases(base: str) -> None:
    # A random MAF over a random base (float64): the flow's density is the base's density
    # of the latent plus the log-det, the base's law checked against torch.distributions;
    # and the flow's samples, mapped back to the latent, follow the base.
    from test_distributions import diag, mixture

    b = diag() if base == "diag" else mixture()
    flow = ff.flows.MAF(features=D, transforms=2, hidden=(16,), base=b).double()
    randomize(flow.bijection, 0.3)
    flow.eval()
    loc, scale = b.loc.detach(), b.log_scale.detach().exp()
    if base == "diag":
        ref: Distribution = td.Independent(td.Normal(loc, scale), 1)
        mean, std = loc, scale
    else:
        ref = td.MixtureSameFamily(
            td.Categorical(logits=b.logits.detach()), td.Independent(td.Normal(loc, scale), 1)
        )
        w = torch.softmax(b.logits.detach(), -1).unsqueeze(-1)
        mean = (w * loc).sum(0)
        std = ((w * (scale**2 + loc**2)).sum(0) - mean**2).sqrt()
    x = 2 * torch.randn(7, D, dtype=torch.float64)
    z, ladj = flow.bijection(x)
    assert not torch.allclose(z, x, atol=1e-2)  # the flow is not the identity
    lp = flow.log_prob(x)
    torch.testing.assert_close(lp, ref.log_prob(z.detach()) + ladj.detach(), rtol=1e-10, atol=1e-10)
    xs, lps = flow.sample_and_log_prob(5)
    torch.testing.assert_close(lps, flow.log_prob(xs), rtol=1e-8, atol=1e-8)
    torch.manual_seed(3)
    with torch.no_grad():
        latent, _ = flow.bijection(flow.sample(N_LATENT))
    _moments(latent, mean, std)


def test_conditional_base() -> None:
    # A random conditional MAF over a random conditional base: per context, the density of
    # the latent is the normal whose mean and scale the base's network gives that context.
    from test_distributions import conditional, conditional_params

    base = conditional()
    flow = ff.flows.MAF(features=D, context=C, transforms=2, hidden=(16,), base=base).double()
    randomize(flow.bijection, 0.3)
    flow.eval()
    c = torch.randn(2, C, dtype=torch.float64)
    loc, scale = (t.detach() for t in conditional_params(base, c))
    x = 2 * torch.randn(6, 1, D, dtype=torch.float64).expand(6, 2, D)
    cx = c.expand(6, 2, C)
    z, ladj = flow.bijection(x.reshape(-1, D), cx.reshape(-1, C))
    ref = td.Independent(td.Normal(loc, scale), 1)
    lp = flow.log_prob(x, cx)
    expected = ref.log_prob(z.detach().reshape(6, 2, D)) + ladj.detach().reshape(6, 2)
    torch.testing.assert_close(lp, expected, rtol=1e-10, atol=1e-10)
    assert bool(((lp[:, 0] - lp[:, 1]).abs() > 1e-3).all())  # the context matters
    xs, lps = flow.sample_and_log_prob(3, c)
    torch.testing.assert_close(lps, flow.log_prob(xs, c.expand(3, 2, C)), rtol=1e-8, atol=1e-8)
    torch.manual_seed(4)
    with torch.no_grad():
        xs = flow.sample(N_LATENT, c)  # (N, 2, D)
        latent, _ = flow.bijection(xs.reshape(-1, D), c.expand(N_LATENT, 2, C).reshape(-1, C))
    latent = latent.reshape(N_LATENT, 2, D)
    for k in range(2):
        _moments(latent[:, k], loc[k], scale[k])


@pytest.mark.parametrize("name", PRESETS)
def test_hparams_rebuild_the_same_architecture(name: str) -> None:
    flow = ready(make(name, C))
    assert flow.hparams["features"] == D and flow.hparams["context"] == C
    with float64_default():  # FFJORD's tight test tolerances need a float64 build
        rebuilt = type(flow)(**flow.hparams)
    with warnings.catch_warnings():  # FFJORD's: solved at float32's floor (test_continuous)
        warnings.simplefilter("ignore", UserWarning)
        rebuilt = rebuilt.float().eval()
    rebuilt.load_state_dict(flow.state_dict())
    x, c = torch.randn(3, D), torch.randn(3, C)
    assert torch.allclose(rebuilt.log_prob(x, c), flow.log_prob(x, c))
