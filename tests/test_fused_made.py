"""MADE's eager fast paths (in-place ReLU, blocked and parameter-major layouts) against a
plain masked MLP of its weights: same values and gradients in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flowforge.nn.made import MADE


@pytest.mark.parametrize("activation", [nn.ReLU, nn.Tanh])
@pytest.mark.parametrize("context", [0, 2])
def test_made_paths_match_sequential(activation: type[nn.Module], context: int) -> None:
    torch.manual_seed(0)
    made = MADE(5, 3, hidden=(16, 12), context=context, activation=activation, zero_last=False)
    made.double()
    x = torch.randn(9, 5, dtype=torch.float64)
    c = torch.randn(9, context, dtype=torch.float64) if context else None
    x_before = x.clone()

    def reference(x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([c, x], -1) if c is not None else x
        layers = made.layers()
        for (w, b, m), act in zip(layers, made.activations):
            h = act(torch.nn.functional.linear(h, w * m, b))
        w, b, m = layers[-1]
        return torch.nn.functional.linear(h, w * m, b).unflatten(-1, (5, 3))

    outs = {
        "reference": reference,
        "plain": lambda x: made(x, c).unflatten(-1, (5, 3)),
        "blocked": lambda x: made(x, c, blocked=True),
        "param_major": lambda x: made(x, c, param_major=True),
    }
    w = torch.randn(9, 5, 3, dtype=torch.float64)
    results = {}
    for name, fn in outs.items():
        made.zero_grad()
        xi = x.clone().requires_grad_()
        y = fn(xi)
        (y * w).sum().backward()
        results[name] = (
            y.detach(),
            xi.grad,
            [torch.zeros(0) if p.grad is None else p.grad.clone() for p in made.parameters()],
        )
    ref = results.pop("reference")
    for name, (y, gx, gp) in results.items():
        torch.testing.assert_close(y, ref[0], rtol=1e-12, atol=1e-12, msg=name)
        torch.testing.assert_close(gx, ref[1], rtol=1e-12, atol=1e-12, msg=name)
        for a, b in zip(gp, ref[2]):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)
    assert torch.equal(x, x_before)
    for i in range(5):
        torch.testing.assert_close(made(x, c, dim=i), ref[0][:, i])


def test_one_flat_parameter_and_masks_are_not_state() -> None:
    made = MADE(4, 2, hidden=(8, 6), context=3)
    names = [n for n, _ in made.named_parameters()]
    assert names == ["flat"]
    assert made.flat.numel() == sum(w.numel() + b.numel() for w, b, _ in made.layers())
    assert list(made.state_dict()) == ["flat"]
    # The views share the parameter's storage: an update of flat is an update of the layers.
    w, _, _ = made.layers()[0]
    with torch.no_grad():
        made.flat.add_(1.0)
    assert torch.equal(made.layers()[0][0], w)


def test_masks_encode_the_autoregressive_property() -> None:
    # Output block i may depend on context and on inputs of lower degree only, whatever the
    # weights (all ones here: every allowed path is open).
    order = [3, 1, 4, 2]
    made = MADE(4, 2, hidden=(10, 7), context=2, order=order, zero_last=False)
    with torch.no_grad():
        made.flat.fill_(1.0)
    x = torch.rand(1, 4, requires_grad=True)  # positive: every ReLU passes
    c = torch.rand(1, 2, requires_grad=True)
    out = made(x, c).unflatten(-1, (4, 2))
    for i in range(4):
        gx, gc = torch.autograd.grad(out[0, i].sum(), (x, c), retain_graph=True)
        allowed = torch.tensor([order[j] < order[i] for j in range(4)])
        assert torch.equal(gx[0] != 0, allowed), i
        assert bool((gc != 0).all())


@pytest.mark.parametrize("activation", [nn.ReLU, nn.Tanh])
def test_mlp_flat_parameter_matches_plain_layers(activation: type[nn.Module]) -> None:
    from flowforge.nn.mlp import MLP

    torch.manual_seed(0)
    net = MLP(4, 3, hidden=(8, 6), activation=activation, zero_last=False).double()
    assert [n for n, _ in net.named_parameters()] == ["flat"]
    x = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 3, dtype=torch.float64)
    (net(x) * w).sum().backward()
    got = (net(x).detach(), x.grad.clone(), net.flat.grad.clone())
    net.zero_grad()
    x.grad = None
    h = x
    grads = []
    layers = [
        (a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_())
        for a, b in net.layers()
    ]
    for i, (a, b) in enumerate(layers):
        h = torch.nn.functional.linear(h, a, b)
        if i < len(layers) - 1:
            h = activation()(h)
    (h * w).sum().backward()
    for a, b in layers:
        grads += [a.grad.flatten(), b.grad]
    torch.testing.assert_close(got[0], h.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[1], x.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[2], torch.cat(grads), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", [nn.ReLU, nn.Tanh])
@pytest.mark.parametrize("context", [0, 2])
@pytest.mark.parametrize("hidden", [(16, 12), (3,), (9, 4, 11)])
def test_forward_dim_computes_only_what_each_dimension_needs(
    activation: type[nn.Module], context: int, hidden: tuple[int, ...]
) -> None:
    torch.manual_seed(1)
    made = MADE(5, 3, hidden=hidden, context=context, activation=activation, order=[2, 5, 1, 4, 3])
    made.double()
    with torch.no_grad():
        made.flat.normal_(0.0, 0.5)
    x = torch.randn(7, 5, dtype=torch.float64)
    c = torch.randn(7, context, dtype=torch.float64) if context else None
    layers = made.sorted_layers()
    orders, needed = made.unit_plan()
    for i in range(5):
        want = made(x, c, dim=i)
        got = made.forward_dim(x, c, i, layers)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        # The gradients reach the parameters the same way too.
        gw = torch.autograd.grad(want.square().sum(), made.flat)[0]
        gg = torch.autograd.grad(got.square().sum(), made.flat, retain_graph=True)[0]
        torch.testing.assert_close(gg, gw, rtol=1e-12, atol=1e-12)
    # The dimension of degree 1 needs no hidden unit but the context-only ones; the
    # last degree the most.
    degrees = made.degrees.tolist()
    first, last = needed[degrees.index(1)], needed[degrees.index(5)]
    assert all(a <= b for a, b in zip(first, last))
    if not context:
        assert first == (0,) * len(hidden)
    assert [len(o) for o in orders] == list(hidden)


@pytest.mark.parametrize("inputs", [3, 8, 40])
@pytest.mark.parametrize("bias", [True, False])
def test_compiled_linear_equals_linear(inputs: int, bias: bool) -> None:
    # The compiled graph's form of a linear layer (a transposed contiguous weight for narrow
    # layers): same values and gradients as F.linear, in float64.
    from flowforge.nn.mlp import compiled_linear

    torch.manual_seed(inputs)
    x = torch.randn(7, inputs, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, inputs, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True) if bias else None
    ins = [t for t in (x, w, b) if t is not None]
    got = compiled_linear(x, w, b)
    want = torch.nn.functional.linear(x, w, b)
    torch.testing.assert_close(got, want)
    g = torch.randn_like(got)
    for a, c in zip(torch.autograd.grad(got, ins, g), torch.autograd.grad(want, ins, g)):
        torch.testing.assert_close(a, c)
