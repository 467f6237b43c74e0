"""The fused masked autoregressive affine layers (a chain of them as one autograd node)
against the composition they replace: values, first and second derivatives in float64,
and that MAF training and IAF sampling with gradients use them."""

from __future__ import annotations

import pytest
import torch

import flowforge as ff
from flowforge.functional.made_affine import (
    AffineLayerSpec,
    MadeAffineChain,
    made_affine_reference,
)
from flowforge.functional.made_affine_inference import (
    made_affine_inference,
)
from flowforge.nn.made import MADE
from flowforge.transforms.autoregressive import MaskedAutoregressive


def _made(features: int, context: int, hidden: tuple[int, ...], seed: int = 0) -> MADE:
    torch.manual_seed(seed)
    order = torch.arange(1, features + 1)
    if seed % 2:
        order = order.flip(0)
    made = MADE(features, 2, hidden=hidden, context=context, order=order).double()
    with torch.no_grad():
        made.flat.normal_(0.0, 0.5)
    return made


def _fused(mades: list[MADE], bound: float = 3.0):
    specs = [AffineLayerSpec(m, bound) for m in mades]

    def fn(x: torch.Tensor, c: torch.Tensor | None, *flats: torch.Tensor):
        return MadeAffineChain.apply(x, c, specs, *flats)

    return fn


def _composed(mades: list[MADE], bound: float = 3.0):
    def fn(x: torch.Tensor, c: torch.Tensor | None, *flats: torch.Tensor):
        total = torch.zeros(x.shape[0], dtype=x.dtype)
        for m, flat in zip(mades, flats):
            x, ladj = made_affine_reference(
                x, c, bound, m.param_major_rows, flat, m.shapes, m.masks()
            )
            total = total + ladj
        return x, total

    return fn


@pytest.mark.parametrize("context", [0, 3])
@pytest.mark.parametrize(
    ("d", "hidden", "layers"), [(5, (7,), 1), (5, (9, 6), 2), (4, (70, 5), 1), (33, (6,), 2)]
)
def test_gradcheck_and_gradgradcheck(
    context: int, d: int, hidden: tuple[int, ...], layers: int
) -> None:
    mades = [_made(d, context, hidden, seed=i) for i in range(layers)]
    fn = _fused(mades)
    x = torch.randn(3, d, dtype=torch.float64, requires_grad=True)
    c = torch.randn(3, context, dtype=torch.float64, requires_grad=True) if context else None
    flats = [m.flat.detach().clone().requires_grad_() for m in mades]
    if c is not None:
        inputs: tuple[torch.Tensor, ...] = (x, c, *flats)
        f = lambda a, b, *p: fn(a, b, *p)  # noqa: E731
    else:
        inputs = (x, *flats)
        f = lambda a, *p: fn(a, None, *p)  # noqa: E731
    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs, fast_mode=True)


# 3, 8: interleaved output layout, transposed first-layer products; 40: blocked layout;
# 70: blocked, first-layer products not transposed.
@pytest.mark.parametrize("d", [3, 8, 40, 70])
@pytest.mark.parametrize("layers", [1, 3])
def test_matches_reference(d: int, layers: int) -> None:
    mades = [_made(d, 2, (80, 40), seed=i) for i in range(layers)]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(33, d, dtype=torch.float64, generator=gen)
    c = torch.randn(33, 2, dtype=torch.float64, generator=gen)
    w_z = torch.randn(33, d, dtype=torch.float64, generator=gen)
    w_l = torch.randn(33, dtype=torch.float64, generator=gen)
    results = []
    for fn in (_fused(mades), _composed(mades)):
        a, b = x.clone().requires_grad_(), c.clone().requires_grad_()
        ps = [m.flat.detach().clone().requires_grad_() for m in mades]
        z, ladj = fn(a, b, *ps)
        ((z * w_z).sum() + (ladj * w_l).sum()).backward()
        results.append((z.detach(), ladj.detach(), a.grad, b.grad, *(p.grad for p in ps)))
    # Rounding only: errors of 1e-12 of each tensor's largest entry (three layers with
    # log-scales near the bound reach gradients of 1e5).
    for got, want in zip(*results):
        scale = float(want.abs().max())
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12 * max(scale, 1.0))


@pytest.mark.parametrize("use", ["z", "ladj"])
def test_one_output_used_and_frozen_layers(use: str) -> None:
    mades = [_made(6, 0, (16, 12), seed=i) for i in range(3)]
    x = torch.randn(10, 6, dtype=torch.float64)
    results = []
    for fn in (_fused(mades), _composed(mades)):
        ps = [m.flat.detach().clone().requires_grad_(i != 1) for i, m in enumerate(mades)]
        z, ladj = fn(x, None, *ps)
        (z.square().sum() if use == "z" else ladj.sum()).backward()
        assert ps[1].grad is None
        results.append([ps[0].grad, ps[2].grad])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_masked_weights_get_no_gradient() -> None:
    made = _made(6, 0, (16, 16))
    x = torch.randn(10, 6, dtype=torch.float64)
    z, ladj = _fused([made])(x, None, made.flat)
    (z.sum() + ladj.sum()).backward()
    assert made.flat.grad is not None
    grads = made.flat.grad.split([n for o, i in made.shapes for n in (o * i, o)])
    for k, m in enumerate(made.masks()):
        gw = grads[2 * k].view(made.shapes[k])
        assert bool((gw[m == 0] == 0).all())
        assert bool((gw[m == 1] != 0).any())


def _node_names(t: torch.Tensor) -> list[str]:
    names, seen, stack = [], set(), [t.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            names.append(type(node).__name__)
            stack += [f for f, _ in node.next_functions]
    return names


def _plain(flow: ff.Flow):
    """A context in which no affine layer is fused (the plain composition)."""

    class Plain:
        def __enter__(self) -> None:
            self.original = MaskedAutoregressive._fused
            MaskedAutoregressive._fused = lambda self, x, c: False  # type: ignore[method-assign]

        def __exit__(self, *exc: object) -> None:
            MaskedAutoregressive._fused = self.original  # type: ignore[method-assign]

    return Plain()


@pytest.mark.parametrize("context", [0, 2])
@pytest.mark.parametrize("d", [4, 40])
def test_maf_training_is_one_fused_node_and_matches_the_composition(context: int, d: int) -> None:
    torch.manual_seed(0)
    flow = ff.flows.MAF(d, context=context, transforms=3, hidden=(12, 10)).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.3)
    x = torch.randn(9, d, dtype=torch.float64)
    c = torch.randn(9, context, dtype=torch.float64) if context else None
    lp = flow.log_prob(x, c)
    assert _node_names(lp).count("MadeAffineChainBackward") == 1
    lp.sum().backward()
    fused = [p.grad.clone() for p in flow.parameters()]
    flow.zero_grad()
    with _plain(flow):
        lp_plain = flow.log_prob(x, c)
        assert "MadeAffineChainBackward" not in _node_names(lp_plain)
        lp_plain.sum().backward()
    torch.testing.assert_close(lp, lp_plain, rtol=1e-12, atol=1e-12)
    for a, p in zip(fused, flow.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        assert flow.log_prob(x, c).grad_fn is None


def test_iaf_reparameterised_sampling_is_one_fused_node() -> None:
    torch.manual_seed(0)
    flow = ff.flows.IAF(5, transforms=3, hidden=(12, 10)).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.3)
    z = torch.randn(8, 5, dtype=torch.float64)
    x, ladj = flow.bijection.inverse(z)
    assert _node_names(x).count("MadeAffineChainBackward") == 1
    (x.square().sum() + ladj.sum()).backward()
    fused = [p.grad.clone() for p in flow.parameters()]
    flow.zero_grad()
    with _plain(flow):
        x_plain, ladj_plain = flow.bijection.inverse(z)
        (x_plain.square().sum() + ladj_plain.sum()).backward()
    torch.testing.assert_close(x, x_plain, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ladj, ladj_plain, rtol=1e-12, atol=1e-12)
    for a, p in zip(fused, flow.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-12, atol=1e-12)


def test_mixed_chains_fall_back_to_layer_by_layer() -> None:
    torch.manual_seed(0)
    maf = ff.flows.MAF(4, transforms=2, hidden=(8,))
    layers = list(maf.bijection.bijections)
    chain = ff.Compose([layers[0], ff.transforms.ReversePermutation(4), layers[1]])
    x = torch.randn(6, 4)
    z, _ = chain(x)
    names = _node_names(z)
    assert names.count("MadeAffineChainBackward") == 2  # each layer fused on its own
    z2, _ = chain.inverse(chain(x)[0])  # D-pass inverse: not fused, still exact
    torch.testing.assert_close(z2, x, rtol=1e-5, atol=1e-5)


def test_cached_constants_follow_the_parameters() -> None:
    torch.manual_seed(0)
    flow = ff.flows.MAF(3, transforms=2, hidden=(8,))
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.3)
    x = torch.randn(5, 3)

    def both(f: ff.Flow, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fused = f.log_prob(x)
        with _plain(f):
            plain = f.log_prob(x)
        return fused, plain

    fused, plain = both(flow, x)
    torch.testing.assert_close(fused, plain)
    # In-place updates (an optimiser step) are seen through the cached views.
    opt = torch.optim.SGD(flow.parameters(), lr=0.1)
    (-fused.mean()).backward()
    opt.step()
    fused2, plain2 = both(flow, x)
    torch.testing.assert_close(fused2, plain2)
    assert not torch.allclose(fused2, fused)
    # load_state_dict copies in place; .double() moves to new memory (rebuilt).
    other = ff.flows.MAF(3, transforms=2, hidden=(8,))
    flow.load_state_dict(other.state_dict())
    torch.testing.assert_close(*both(flow, x))
    flow.double()
    fused3, plain3 = both(flow, x.double())
    assert fused3.dtype == torch.float64
    torch.testing.assert_close(fused3, plain3, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("context", [0, 2])
@pytest.mark.parametrize("chunk", [7, 1000])
@pytest.mark.parametrize("d", [6, 40])  # interleaved and blocked output layouts
def test_inference_path_matches_reference(context: int, chunk: int, d: int) -> None:
    made = _made(d, context, (60, 50))
    gen = torch.Generator().manual_seed(2)
    x = 3 * torch.randn(50, d, dtype=torch.float64, generator=gen)
    c = torch.randn(50, context, dtype=torch.float64, generator=gen) if context else None
    args = (x, c, 2.0, made.param_major_rows, made.flat, made.shapes)
    with torch.no_grad():
        z, ladj = made_affine_inference(*args, made.masks(), chunk)
        z_ref, ladj_ref = made_affine_reference(*args, made.masks())
    torch.testing.assert_close(z, z_ref, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(ladj, ladj_ref, rtol=1e-13, atol=1e-13)


def test_maf_log_prob_without_gradients_takes_the_inference_path() -> None:
    torch.manual_seed(0)
    flow = ff.flows.MAF(5, transforms=2, hidden=(16, 16)).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.3)
    calls = {"n": 0}
    original = MaskedAutoregressive.forward

    import flowforge.transforms.autoregressive as ar

    real = ar.made_affine_inference

    def counting(*args, **kw):
        calls["n"] += 1
        return real(*args, **kw)

    ar.made_affine_inference = counting  # type: ignore[assignment]
    try:
        x = torch.randn(20, 5, dtype=torch.float64)
        with torch.no_grad():
            fast = flow.log_prob(x)
        assert calls["n"] == 2
        slow = flow.log_prob(x).detach()  # with gradients: the fused node
        torch.testing.assert_close(fast, slow, rtol=1e-13, atol=1e-13)
    finally:
        ar.made_affine_inference = real  # type: ignore[assignment]
    assert MaskedAutoregressive.forward is original


def test_copies_drop_the_cache_and_train_on_their_own_parameters() -> None:
    import copy

    torch.manual_seed(0)
    flow = ff.flows.MAF(3, transforms=2, hidden=(8,))
    x = torch.randn(5, 3)
    flow.log_prob(x).sum().backward()  # builds the caches
    layer = flow.bijection.bijections[0]
    assert "_spec_cache" in layer.__dict__
    twin = copy.deepcopy(flow)
    assert "_spec_cache" not in twin.bijection.bijections[0].__dict__
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(0.1)
    fused = twin.log_prob(x)
    with _plain(twin):
        plain = twin.log_prob(x)
    torch.testing.assert_close(fused, plain)
    assert not torch.allclose(fused, flow.log_prob(x))


@pytest.mark.parametrize("context", [0, 3])
@pytest.mark.parametrize(
    ("d", "hidden"),
    [
        (1, (6,)),
        (5, (30, 20)),
        (8, (3,)),
        (8, (40, 7, 12)),
        (40, (50, 45)),
    ],  # (3,): degrees missing
)
@pytest.mark.parametrize("reverse", [False, True])
def test_inverse_inference_matches_the_module_path(
    context: int, d: int, hidden: tuple[int, ...], reverse: bool
) -> None:
    torch.manual_seed(0)
    order = torch.arange(1, d + 1).flip(0) if reverse else None
    made = MADE(d, 2, hidden=hidden, context=context, order=order)
    layer = MaskedAutoregressive(ff.transforms.Affine(3.0), made).double()
    with torch.no_grad():
        made.flat.normal_(0.0, 0.4)
    gen = torch.Generator().manual_seed(3)
    z = 2 * torch.randn(300, d, dtype=torch.float64, generator=gen)
    c = torch.randn(300, context, dtype=torch.float64, generator=gen) if context else None
    layer._width = 4096  # row chunks of 256: two chunks, the second partial
    with torch.no_grad():
        x, ladj = layer.inverse(z, c)
    with torch.enable_grad():  # the module path (the kernel runs without gradients only)
        x_ref, ladj_ref = super(MaskedAutoregressive, layer).inverse(z, c)
    x_ref, ladj_ref = x_ref.detach(), ladj_ref.detach()
    scale = float(x_ref.abs().max())
    torch.testing.assert_close(x, x_ref, rtol=1e-12, atol=1e-12 * scale)
    torch.testing.assert_close(ladj, ladj_ref, rtol=1e-12, atol=1e-12)
    z_back, ladj_fwd = layer(x, c)
    torch.testing.assert_close(z_back.detach(), z, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ladj_fwd.detach(), -ladj, rtol=1e-10, atol=1e-10)


def test_each_pass_needs_a_prefix_of_degree_sorted_units() -> None:
    made = MADE(4, 2, hidden=(9, 7), order=[3, 1, 4, 2])
    spec = AffineLayerSpec(made, 3.0)
    degrees = made.degrees.tolist()
    # The dimension of degree 1 depends on nothing: no hidden unit; degree 4, the most.
    assert spec.needed[degrees.index(1)] == (0, 0)
    counts = [spec.needed[degrees.index(k)] for k in (1, 2, 3, 4)]
    assert counts == sorted(counts) and counts[-1][0] <= 9 and counts[-1][1] <= 7
    # A prefix suffices: the output rows of dimension i see no unit outside it.
    out_mask = made.masks()[-1]
    last = spec.unit_order[-1]
    for i in range(4):
        n = spec.needed[i][-1]
        rows = out_mask[2 * i : 2 * i + 2][:, last]
        assert bool((rows[:, n:] == 0).all())


def test_maf_sampling_and_iaf_density_take_the_inverse_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import flowforge.transforms.autoregressive as ar

    calls = {"n": 0}
    real = ar.made_affine_inverse_inference

    def counting(*args: object, **kw: object):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(ar, "made_affine_inverse_inference", counting)
    torch.manual_seed(0)
    maf, iaf = (
        ff.flows.MAF(4, transforms=2, hidden=(8,)),
        ff.flows.IAF(4, transforms=2, hidden=(8,)),
    )
    with torch.no_grad():
        x = maf.sample(5)
        lp = iaf.log_prob(torch.randn(5, 4))
    assert calls["n"] == 4 and x.shape == (5, 4) and bool(torch.isfinite(lp).all())
    calls["n"] = 0
    lp = iaf.log_prob(torch.randn(5, 4))  # with gradients: the module path
    assert calls["n"] == 0 and lp.grad_fn is not None
