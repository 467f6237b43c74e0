"""One home for the flat parameter layout (``functional.flat``).

The networks (MLP, MADE) and the fused kernels must all read a flat parameter vector, and
write their flat gradient buffers, through ``functional.flat``: under another layout
(biases first) every network and kernel still computes the network its layers describe.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import flowforge as ff
from flowforge.functional import flat
from flowforge.functional.coupling_chain import CouplingStep, coupling_chain, coupling_reference
from flowforge.functional.coupling_inference import coupling_inference
from flowforge.functional.made_affine import (
    AffineLayerSpec,
    made_affine_chain,
    made_affine_reference,
)
from flowforge.functional.made_affine_inference import (
    made_affine_inference,
    made_affine_inverse_inference,
)

BOUND = 2.0


def test_split_and_join_are_inverse_views() -> None:
    gen = torch.Generator().manual_seed(0)
    shapes = [(4, 3), (5, 4), (2, 5)]
    layers = [
        (torch.randn(o, i, dtype=torch.float64, generator=gen), torch.randn(o, dtype=torch.float64))
        for o, i in shapes
    ]
    v = flat.join_layers(layers)
    assert v.numel() == sum(flat.layer_sizes(shapes)) == 12 + 4 + 20 + 5 + 10 + 2
    views = flat.split_layers(v, shapes)
    for (w, b), (w0, b0) in zip(views, layers):
        assert torch.equal(w, w0) and torch.equal(b, b0)
        assert w.data_ptr() >= v.data_ptr() and w._base is v  # views, not copies
    # The layout: weight row-major, then bias, layer by layer.
    assert torch.equal(v[:12], layers[0][0].flatten()) and torch.equal(v[12:16], layers[0][1])


def _bias_first_sizes(shapes: Sequence[tuple[int, int]]) -> list[int]:
    return [n for o, i in shapes for n in (o, o * i)]


def _bias_first_split(
    flat: Tensor, shapes: Sequence[tuple[int, int]], sizes: Sequence[int] | None = None
) -> list[tuple[Tensor, Tensor]]:
    pieces = flat.split([n for o, i in shapes for n in (o, o * i)])
    return [(pieces[2 * k + 1].view(shape), pieces[2 * k]) for k, shape in enumerate(shapes)]


def _bias_first_join(layers: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
    return torch.cat([t for w, b in layers for t in (b, w.flatten())])


@pytest.fixture
def bias_first() -> Iterator[None]:
    """Swap the layout functions' code for a biases-first layout during a test."""
    fns = (flat.layer_sizes, flat.split_layers, flat.join_layers)
    codes = [f.__code__ for f in fns]
    for f, g in zip(fns, (_bias_first_sizes, _bias_first_split, _bias_first_join)):
        f.__code__ = g.__code__
    try:
        yield
    finally:
        for f, c in zip(fns, codes):
            f.__code__ = c


def _by_hand(h: Tensor, layers: list[tuple[Tensor, Tensor]]) -> Tensor:
    for k, (w, b) in enumerate(layers):
        h = F.linear(h, w, b)
        if k < len(layers) - 1:
            h = torch.relu(h)
    return h


def _grads(out: tuple[Tensor, Tensor], inputs: list[Tensor]) -> list[Tensor]:
    z, ladj = out
    w = torch.linspace(-1.0, 1.0, z.numel(), dtype=z.dtype).view(z.shape)
    return list(torch.autograd.grad((z * w).sum() + ladj.sum(), inputs))


@pytest.mark.usefixtures("bias_first")
def test_mlp_and_coupling_kernels_read_the_one_layout() -> None:
    torch.manual_seed(1)
    d, split, n = 6, 3, 30
    net = ff.nn.MLP(split, 2 * (d - split), hidden=(7, 5), zero_last=False).double()
    with torch.no_grad():
        net.flat.normal_(0.0, 0.5)
    layers = net.layers()
    assert torch.equal(net.flat[: layers[0][1].numel()], layers[0][1])  # the bias came first
    # The layers (weight (out, in), bias) as plain tensors, and the network they make.
    plain = [(w.detach().clone(), b.detach().clone()) for w, b in layers]
    x = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(net(x[:, :split]), _by_hand(x[:, :split], plain))
    step = CouplingStep(split, 0, tuple(net.shapes), BOUND)
    ref = coupling_reference(x, None, step, net.flat)
    h = _by_hand(x[:, :split], plain)
    s = BOUND * torch.tanh(h[:, 0::2] / BOUND)
    z = torch.cat([x[:, :split], x[:, split:] * s.exp() + h[:, 1::2]], -1)
    torch.testing.assert_close(ref, (z, s.sum(-1)))
    out = coupling_chain(x, None, [step], [net.flat])
    torch.testing.assert_close(out, ref)
    for g, r in zip(_grads(out, [x, net.flat]), _grads(ref, [x, net.flat])):
        torch.testing.assert_close(g, r)  # the flat gradient buffer in the same layout
    with torch.no_grad():
        got = coupling_inference(x, None, split, net.layers(), BOUND, False, 16)
    torch.testing.assert_close(got, ref)


@pytest.mark.usefixtures("bias_first")
@pytest.mark.parametrize("d", [5, 33])
def test_made_and_its_kernels_read_the_one_layout(d: int) -> None:
    torch.manual_seed(2)
    n = 30
    made = ff.nn.MADE(d, 2, hidden=(9, 7), context=2, zero_last=False).double()
    with torch.no_grad():
        made.flat.normal_(0.0, 0.4)
    _, b0, _ = made.layers()[0]
    assert torch.equal(made.flat[: b0.numel()], b0)
    x = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    c = torch.randn(n, 2, dtype=torch.float64)
    plain = [((w * m).detach(), b.detach()) for w, b, m in made.layers()]
    torch.testing.assert_close(made(x, c), _by_hand(torch.cat([c, x], -1), plain))
    args = (BOUND, made.param_major_rows, made.flat, made.shapes, made.masks())
    ref = made_affine_reference(x, c, *args)
    params = _by_hand(torch.cat([c, x], -1), plain).unflatten(-1, (d, 2))
    s = BOUND * torch.tanh(params[..., 0] / BOUND)
    torch.testing.assert_close(ref, (x * s.exp() + params[..., 1], s.sum(-1)))
    spec = AffineLayerSpec(made, BOUND)
    out = made_affine_chain(x, c, [spec], [made.flat])
    torch.testing.assert_close(out, ref)
    for g, r in zip(_grads(out, [x, made.flat]), _grads(ref, [x, made.flat])):
        torch.testing.assert_close(g, r)
    with torch.no_grad():
        torch.testing.assert_close(made_affine_inference(x, c, *args, 16), ref)
        order = made.degrees.argsort().tolist()
        x_back, _ = made_affine_inverse_inference(ref[0], c, spec, made.flat, order, 16)
    torch.testing.assert_close(x_back, x)
