"""The fused masked autoregressive affine layer (one autograd node) against the composition
it replaces: values, first and second derivatives in float64, and that MAF training uses it."""

from __future__ import annotations

import pytest
import torch

import flowforge as ff
from flowforge.functional.made_affine import (
    MadeAffineFunction,
    made_affine_inference,
    made_affine_reference,
    tanh_via_sigmoid_,
)
from flowforge.nn.made import MADE
from flowforge.transforms.autoregressive import MaskedAutoregressive


def _made(features: int, context: int, hidden: tuple[int, ...]) -> MADE:
    torch.manual_seed(0)
    made = MADE(features, 2, hidden=hidden, context=context, order=None).double()
    with torch.no_grad():
        made.flat.normal_(0.0, 0.5)
    return made


def _fused(made: MADE, bound: float = 3.0):
    def fn(x: torch.Tensor, c: torch.Tensor | None, flat: torch.Tensor):
        return MadeAffineFunction.apply(
            x, c, bound, made.param_major_rows, flat, made.shapes, *made.masks()
        )

    return fn


@pytest.mark.parametrize("context", [0, 3])
@pytest.mark.parametrize("hidden", [(7,), (9, 6), (70, 5)])
def test_gradcheck_and_gradgradcheck(context: int, hidden: tuple[int, ...]) -> None:
    made = _made(5, context, hidden)
    fn = _fused(made)
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    c = torch.randn(6, context, dtype=torch.float64, requires_grad=True) if context else None
    flat = made.flat.detach().clone().requires_grad_()
    inputs = (x, c, flat) if c is not None else (x, flat)
    f = (lambda a, b, p: fn(a, b, p)) if c is not None else (lambda a, p: fn(a, None, p))
    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)


@pytest.mark.parametrize("d", [3, 8, 70])  # 70: the first-layer products are not transposed
def test_matches_reference(d: int) -> None:
    made = _made(d, 2, (80, 40))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(33, d, dtype=torch.float64, generator=gen)
    c = torch.randn(33, 2, dtype=torch.float64, generator=gen)
    w_z = torch.randn(33, d, dtype=torch.float64, generator=gen)
    w_l = torch.randn(33, dtype=torch.float64, generator=gen)
    results = []
    for fn in (
        _fused(made),
        lambda a, b, p: made_affine_reference(
            a, b, 3.0, made.param_major_rows, p, made.shapes, made.masks()
        ),
    ):
        a, b = x.clone().requires_grad_(), c.clone().requires_grad_()
        p = made.flat.detach().clone().requires_grad_()
        z, ladj = fn(a, b, p)
        ((z * w_z).sum() + (ladj * w_l).sum()).backward()
        results.append((z.detach(), ladj.detach(), a.grad, b.grad, p.grad))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_masked_weights_get_no_gradient() -> None:
    made = _made(6, 0, (16, 16))
    x = torch.randn(10, 6, dtype=torch.float64)
    z, ladj = _fused(made)(x, None, made.flat)
    (z.sum() + ladj.sum()).backward()
    assert made.flat.grad is not None
    grads = made.flat.grad.split([n for o, i in made.shapes for n in (o * i, o)])
    for k, m in enumerate(made.masks()):
        gw = grads[2 * k].view(made.shapes[k])
        assert bool((gw[m == 0] == 0).all())
        assert bool((gw[m == 1] != 0).any())


@pytest.mark.parametrize("context", [0, 2])
def test_maf_training_takes_the_fused_node_and_matches_the_composition(context: int) -> None:
    torch.manual_seed(0)
    flow = ff.flows.MAF(4, context=context, transforms=3, hidden=(12, 10)).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.3)
    x = torch.randn(9, 4, dtype=torch.float64)
    c = torch.randn(9, context, dtype=torch.float64) if context else None
    lp = flow.log_prob(x, c)
    names: set[str] = set()
    stack = [lp.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and type(node).__name__ not in names:
            names.add(type(node).__name__)
            stack += [f for f, _ in node.next_functions]
    assert "MadeAffineFunctionBackward" in names
    lp.sum().backward()
    fused = [p.grad.clone() for p in flow.parameters()]
    flow.zero_grad()
    original = MaskedAutoregressive._fused
    try:
        MaskedAutoregressive._fused = lambda self, x, c: False  # type: ignore[method-assign]
        lp_plain = flow.log_prob(x, c)
        lp_plain.sum().backward()
    finally:
        MaskedAutoregressive._fused = original  # type: ignore[method-assign]
    torch.testing.assert_close(lp, lp_plain, rtol=1e-12, atol=1e-12)
    for a, p in zip(fused, flow.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        assert flow.log_prob(x, c).grad_fn is None


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


def test_tanh_via_sigmoid_is_tanh() -> None:
    u = torch.cat([torch.linspace(-50, 50, 2001), torch.tensor([0.0, 1e-30, -1e-30, 1e4])])
    for dtype, tol in [(torch.float32, 2e-7), (torch.float64, 5e-16)]:
        got = tanh_via_sigmoid_(2 * u.to(dtype))
        torch.testing.assert_close(got, torch.tanh(u.to(dtype)), rtol=0, atol=tol)
        assert bool(torch.isfinite(got).all())
