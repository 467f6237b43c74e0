"""The fused affine transformer (one autograd node, hand-written backward)."""

from __future__ import annotations

import pytest
import torch

import flowforge as ff
from flowforge.functional.affine import AffineFunction
from flowforge.transforms.affine import Affine


def reference(x: torch.Tensor, params: torch.Tensor, bound: float):
    raw, shift = params.unbind(-1)
    s = bound * torch.tanh(raw / bound)
    return x * torch.exp(s) + shift, s


@pytest.mark.parametrize("bound", [3.0, 0.5])
def test_gradcheck_float64(bound: float) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    params = (2 * torch.randn(5, 4, 2, dtype=torch.float64, generator=gen)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: AffineFunction.apply(a, b, bound), (x, params))
    # create_graph=True takes a differentiable backward: second derivatives are exact too.
    assert torch.autograd.gradgradcheck(
        lambda a, b: AffineFunction.apply(a, b, bound), (x, params), fast_mode=True
    )


def test_matches_reference_values_and_gradients() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(7, 3, 6, dtype=torch.float64, generator=gen)
    params = 3 * torch.randn(7, 3, 6, 2, dtype=torch.float64, generator=gen)
    w_z, w_s = torch.randn(2, 7, 3, 6, dtype=torch.float64, generator=gen)
    grads = []
    for fn in (lambda a, b: AffineFunction.apply(a, b, 3.0), lambda a, b: reference(a, b, 3.0)):
        a, b = x.clone().requires_grad_(), params.clone().requires_grad_()
        z, s = fn(a, b)
        ((z * w_z).sum() + (s * w_s).sum()).backward()
        grads.append((z.detach(), s.detach(), a.grad, b.grad))
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("x_grad", [True, False])
def test_affine_uses_it_only_when_differentiating(x_grad: bool) -> None:
    t = Affine()
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=x_grad)
    params = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    z, s = t(x, params)
    assert type(z.grad_fn).__name__ == "AffineFunctionBackward"
    z_ref, s_ref = reference(x, params, t.bound)
    torch.testing.assert_close(z, z_ref)
    torch.testing.assert_close(s, s_ref)
    z.sum().backward()
    assert (x.grad is not None) == x_grad
    with torch.no_grad():
        z, _ = t(x, params)
    assert z.grad_fn is None


def test_affine_under_torch_func_grad_and_vmap() -> None:
    # torch.func transforms take the plain composition (the fused node is eager-autograd only).
    gen = torch.Generator().manual_seed(2)
    t = Affine()
    x = torch.randn(6, 3, dtype=torch.float64, generator=gen)
    params = torch.randn(6, 3, 2, dtype=torch.float64, generator=gen)

    def loss(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        z, s = t(x, params)
        return (z.square() + s).sum()

    for argnums in (0, 1):
        got = torch.func.grad(loss, argnums=argnums)(x, params)
        a, b = x.clone().requires_grad_(), params.clone().requires_grad_()
        loss(a, b).backward()
        torch.testing.assert_close(got, (a, b)[argnums].grad)
    z, s = torch.func.vmap(t)(x, params)
    z_ref, s_ref = reference(x, params, t.bound)
    torch.testing.assert_close(z, z_ref)
    torch.testing.assert_close(s, s_ref)


def test_plain_modules_switch_takes_the_composition() -> None:
    t = Affine()
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    params = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    with ff.functional.plain_modules():
        z, s = t(x, params)
    assert type(z.grad_fn).__name__ != "AffineFunctionBackward"
    z_ref, s_ref = reference(x, params, t.bound)
    torch.testing.assert_close(z, z_ref)
    torch.testing.assert_close(s, s_ref)
