"""One home for the affine transformer's bounded log-scale.

Every path that applies the affine transformer (the module, its autograd node, the fused
masked autoregressive and coupling kernels, with and without gradients, and their
references) must compute the log-scale with ``functional.affine.bounded_log_scale`` and its
derivative with ``bounded_log_scale_backward``. Swapping those two functions for another
bound (softsign instead of tanh) must change every path alike, to what a hand-written
softsign formula gives.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

import flowforge as ff
from flowforge.functional import affine
from flowforge.functional.coupling_chain import CouplingStep, coupling_chain
from flowforge.functional.coupling_inference import coupling_inference
from flowforge.functional.made_affine import (
    AffineLayerSpec,
    made_affine_chain,
)
from flowforge.functional.made_affine_inference import (
    made_affine_inference,
    made_affine_inverse_inference,
)

BOUND = 1.5


def _softsign(raw: Tensor, bound: float, out: Tensor | None = None) -> Tensor:
    u = torch.div(raw, bound, out=out)
    u = torch.div(u, torch.abs(u) + 1.0, out=out)
    return torch.mul(u, bound, out=out)


def _softsign_backward(
    grad: Tensor, log_scale: Tensor, bound: float, out: Tensor | None = None
) -> Tensor:
    return torch.mul(grad, (1.0 - torch.abs(log_scale) / bound) ** 2, out=out)


def _by_hand(raw: Tensor, bound: float) -> Tensor:
    """The softsign bound written out, independent of flowforge."""
    return raw / (1.0 + (raw / bound).abs())


@pytest.fixture
def softsign() -> Iterator[None]:
    """Replace the two functions' code (so every reference to them, whatever its import,
    runs softsign) for the duration of a test."""
    fns = (affine.bounded_log_scale, affine.bounded_log_scale_backward)
    codes = [f.__code__ for f in fns]
    fns[0].__code__ = _softsign.__code__
    fns[1].__code__ = _softsign_backward.__code__
    try:
        yield
    finally:
        for f, c in zip(fns, codes):
            f.__code__ = c


def test_bounded_log_scale_is_bound_tanh_and_its_derivative() -> None:
    gen = torch.Generator().manual_seed(0)
    raw = torch.cat(
        [
            8 * torch.randn(200, dtype=torch.float64, generator=gen),
            torch.tensor([0.0, 1e4, -1e4], dtype=torch.float64),
        ]
    )
    for bound in (3.0, 0.5):
        want = bound * torch.tanh(raw / bound)
        torch.testing.assert_close(affine.bounded_log_scale(raw, bound), want, rtol=0, atol=1e-14)
        buf = raw.clone()
        strided = buf.view(-1, 1).expand(-1, 2).clone()[:, 0]  # a non-contiguous view
        assert affine.bounded_log_scale(strided, bound, out=strided) is strided
        torch.testing.assert_close(strided, want, rtol=0, atol=1e-14)
        r = raw.clone().requires_grad_()
        g = torch.randn(raw.shape, dtype=torch.float64, generator=gen)
        (bound * torch.tanh(r / bound)).backward(g)
        got = affine.bounded_log_scale_backward(g, want, bound)
        torch.testing.assert_close(got, r.grad, rtol=1e-12, atol=1e-13)


def _made(d: int, context: int) -> ff.nn.MADE:
    torch.manual_seed(d + context)
    made = ff.nn.MADE(d, 2, hidden=(9, 7), context=context, order=torch.randperm(d) + 1)
    made = made.double()
    with torch.no_grad():
        made.flat.normal_(0.0, 0.4)
    return made


def _mlp(d_in: int, d_out: int) -> ff.nn.MLP:
    torch.manual_seed(d_in + d_out)
    net = ff.nn.MLP(d_in, d_out, hidden=(8, 6), zero_last=False).double()
    with torch.no_grad():
        net.flat.normal_(0.0, 0.4)
    return net


def _affine_by_hand(x: Tensor, raw: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
    s = _by_hand(raw, BOUND)
    return x * torch.exp(s) + shift, s.sum(-1)


def _grads(out: tuple[Tensor, Tensor], inputs: list[Tensor], create_graph: bool) -> list[Tensor]:
    z, ladj = out
    w = torch.linspace(-1.0, 1.0, z.numel(), dtype=z.dtype).view(z.shape)
    return list(
        torch.autograd.grad(
            (z * w).sum() + ladj.sum(), inputs, create_graph=create_graph, retain_graph=True
        )
    )


@pytest.mark.usefixtures("softsign")
def test_affine_module_and_node_follow_the_one_function() -> None:
    gen = torch.Generator().manual_seed(1)
    t = ff.transforms.Affine(BOUND)
    x = torch.randn(6, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    p = (3 * torch.randn(6, 5, 2, dtype=torch.float64, generator=gen)).requires_grad_()
    z_ref, s_ref = _affine_by_hand(x, p[..., 0], p[..., 1])
    ref = _grads((z_ref, s_ref), [x, p], False)
    blocked = p.detach().transpose(-1, -2).contiguous().transpose(-1, -2)  # memory (*, P, D)
    for params, node in ((p, "AffineFunctionBackward"), (blocked.requires_grad_(), None)):
        z, s = t(x, params)
        if node is not None:
            assert type(z.grad_fn).__name__ == node
        torch.testing.assert_close(z, z_ref)
        torch.testing.assert_close(s.sum(-1), s_ref)
        for create_graph in (False, True):
            for g, r in zip(_grads((z, s.sum(-1)), [x, params], create_graph), ref):
                torch.testing.assert_close(g, r)
        with torch.no_grad():
            torch.testing.assert_close(t(x, params)[0], z_ref)
            torch.testing.assert_close(t.inverse(z_ref, params)[0], x)


@pytest.mark.usefixtures("softsign")
@pytest.mark.parametrize(("d", "context"), [(5, 0), (5, 2), (33, 0)])
def test_made_affine_kernels_follow_the_one_function(d: int, context: int) -> None:
    gen = torch.Generator().manual_seed(2)
    made = _made(d, context)
    n = 40
    x = torch.randn(n, d, dtype=torch.float64, generator=gen, requires_grad=True)
    c = torch.randn(n, context, dtype=torch.float64, generator=gen) if context else None
    params = made(x, c).unflatten(-1, (d, 2))  # the module path's network, formula-free
    z_ref, ladj_ref = _affine_by_hand(x, params[..., 0], params[..., 1])
    ref = _grads((z_ref, ladj_ref), [x, made.flat], False)
    spec = AffineLayerSpec(made, BOUND)
    out = made_affine_chain(x, c, [spec], [made.flat])
    assert type(out[0].grad_fn).__name__ == "MadeAffineChainBackward"
    torch.testing.assert_close(out, (z_ref, ladj_ref))
    for create_graph in (False, True):  # the written-out backward, and the recomputed one
        for g, r in zip(_grads(out, [x, made.flat], create_graph), ref):
            torch.testing.assert_close(g, r)
    with torch.no_grad():
        args = (made.param_major_rows, made.flat, made.shapes, made.masks())
        for chunk in (n, 16):
            got = made_affine_inference(x, c, BOUND, *args, chunk)
            torch.testing.assert_close(got, (z_ref, ladj_ref))
            order = made.degrees.argsort().tolist()
            x_back, ladj_back = made_affine_inverse_inference(
                z_ref, c, spec, made.flat, order, chunk
            )
            torch.testing.assert_close(x_back, x)
            torch.testing.assert_close(ladj_back, -ladj_ref)
        # The module layer, with and without the plain switch, agrees too.
        layer = ff.transforms.MaskedAutoregressive(ff.transforms.Affine(BOUND), made)
        torch.testing.assert_close(layer(x, c), (z_ref, ladj_ref))
        with ff.functional.plain_modules():
            torch.testing.assert_close(layer(x, c), (z_ref, ladj_ref))


@pytest.mark.usefixtures("softsign")
@pytest.mark.parametrize(("d", "context"), [(5, 0), (6, 2), (66, 0)])
def test_coupling_kernels_follow_the_one_function(d: int, context: int) -> None:
    gen = torch.Generator().manual_seed(3)
    split = d // 2
    net = _mlp(split + context, 2 * (d - split))
    n = 40
    x = torch.randn(n, d, dtype=torch.float64, generator=gen, requires_grad=True)
    c = torch.randn(n, context, dtype=torch.float64, generator=gen) if context else None
    a = x[:, :split] if c is None else torch.cat([x[:, :split], c], -1)
    h = net(a).unflatten(-1, (d - split, 2))  # the module path's network, formula-free
    zb, ladj_ref = _affine_by_hand(x[:, split:], h[..., 0], h[..., 1])
    z_ref = torch.cat([x[:, :split], zb], -1)
    ref = _grads((z_ref, ladj_ref), [x, net.flat], False)
    step = CouplingStep(split, context, tuple(net.shapes), BOUND)
    out = coupling_chain(x, c, [step], [net.flat])
    assert type(out[0].grad_fn).__name__ == "CouplingChainBackward"
    torch.testing.assert_close(out, (z_ref, ladj_ref))
    for create_graph in (False, True):
        for g, r in zip(_grads(out, [x, net.flat], create_graph), ref):
            torch.testing.assert_close(g, r)
    with torch.no_grad():
        for chunk in (n, 16):
            got = coupling_inference(x, c, split, net.layers(), BOUND, False, chunk)
            torch.testing.assert_close(got, (z_ref, ladj_ref))
            x_back, ladj_back = coupling_inference(
                z_ref, c, split, net.layers(), BOUND, True, chunk
            )
            torch.testing.assert_close(x_back, x)
            torch.testing.assert_close(ladj_back, -ladj_ref)
        mask = torch.arange(d) < split
        layer = ff.transforms.Coupling(mask, ff.transforms.Affine(BOUND), net, context=context)
        torch.testing.assert_close(layer(x, c), (z_ref, ladj_ref))
        with ff.functional.plain_modules():
            torch.testing.assert_close(layer(x, c), (z_ref, ladj_ref))
