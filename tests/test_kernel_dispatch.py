"""Fused kernels run only for the exact modules they implement; anything else runs as written.

A subclass of MLP / MADE / a permutation that overrides ``forward`` must be honoured in every
path: inference without gradients, training with gradients, and the fused chains that
``Compose`` hands a run of layers to. The references below are written out in the test from
the subclass's own ``forward`` (a different code path from the library's).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import flowforge as ff
from registry import randomize

T = ff.transforms
BOUND = 3.0


class HalvedMLP(ff.nn.MLP):
    """An MLP whose outputs are halved: a user network with its own semantics."""

    def forward(self, x: Tensor) -> Tensor:
        return 0.5 * super().forward(x) + 0.1


class ShiftedMADE(ff.nn.MADE):
    """A MADE whose outputs are scaled and shifted (still autoregressive)."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:  # type: ignore[override]
        return 0.5 * super().forward(x, context) + 0.2


class NoisyReverse(T.ReversePermutation):
    """A permutation subclass that also adds one to every value (not a pure permutation)."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z, ladj = super().forward(x, context)
        return z + 1.0, ladj

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return super().inverse(z - 1.0, context)


def _affine(x: Tensor, raw: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
    s = BOUND * torch.tanh(raw / BOUND)
    return x * torch.exp(s) + shift, s.sum(-1)


def _coupling_reference(layer: T.Coupling, x: Tensor) -> tuple[Tensor, Tensor]:
    a, b = x[:, : layer.split], x[:, layer.split :]
    p = layer.net(a).unflatten(-1, (b.shape[-1], 2))
    zb, ladj = _affine(b, p[..., 0], p[..., 1])
    return torch.cat([a, zb], -1), ladj


def _coupling(net_cls: type[ff.nn.MLP] = HalvedMLP) -> T.Coupling:
    layer = T.Coupling(T.half_mask(4), T.Affine(BOUND), net_cls(2, 2 * 2, hidden=(8,)))
    return randomize(layer).double()  # type: ignore[return-value]


@pytest.mark.parametrize("grad", [False, True])
def test_mlp_subclass_in_coupling_runs_its_forward(grad: bool) -> None:
    torch.manual_seed(0)
    layer = _coupling()
    x = torch.randn(7, 4, dtype=torch.float64)
    z_ref, ladj_ref = _coupling_reference(layer, x)
    with torch.set_grad_enabled(grad):
        z, ladj = layer(x)
        x_back, ladj_inv = layer.inverse(z)
    assert torch.allclose(z, z_ref) and torch.allclose(ladj, ladj_ref)
    assert torch.allclose(x_back, x) and torch.allclose(ladj_inv, -ladj_ref)


def test_mlp_subclass_in_a_coupling_chain_runs_its_forward() -> None:
    """In training, Compose hands a run of couplings to the fused chain: not this one."""
    torch.manual_seed(1)
    first, second = _coupling(), _coupling(ff.nn.MLP)
    chain = ff.Compose([first, T.ReversePermutation(4), second])
    x = torch.randn(9, 4, dtype=torch.float64)
    z1, l1 = _coupling_reference(first, x)
    z2, l2 = _coupling_reference(second, z1.flip(-1))
    z, ladj = chain(x)
    assert torch.allclose(z, z2) and torch.allclose(ladj, l1 + l2)
    # Gradients are those of the reference too.
    g = torch.autograd.grad(ladj.sum(), first.net.flat)[0]
    g_ref = torch.autograd.grad((l1 + l2).sum(), first.net.flat)[0]
    assert torch.allclose(g, g_ref)


def test_permutation_subclass_in_a_coupling_chain_runs_its_forward() -> None:
    torch.manual_seed(2)
    first, second = _coupling(ff.nn.MLP), _coupling(ff.nn.MLP)
    chain = ff.Compose([first, NoisyReverse(4), second])
    x = torch.randn(5, 4, dtype=torch.float64)
    z1, l1 = _coupling_reference(first, x)
    z2, l2 = _coupling_reference(second, z1.flip(-1) + 1.0)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            z, ladj = chain(x)
        assert torch.allclose(z, z2) and torch.allclose(ladj, l1 + l2)


def _made_layer() -> T.MaskedAutoregressive:
    made = ShiftedMADE(4, 2, hidden=(16,), order=[2, 4, 1, 3])
    return randomize(T.MaskedAutoregressive(T.Affine(BOUND), made)).double()  # type: ignore[return-value]


def _made_reference(layer: T.MaskedAutoregressive, x: Tensor) -> tuple[Tensor, Tensor]:
    p = layer.made(x).unflatten(-1, (4, 2))
    return _affine(x, p[..., 0], p[..., 1])


@pytest.mark.parametrize("grad", [False, True])
def test_made_subclass_runs_its_forward(grad: bool) -> None:
    torch.manual_seed(3)
    layer = _made_layer()
    x = torch.randn(6, 4, dtype=torch.float64)
    z_ref, ladj_ref = _made_reference(layer, x)
    with torch.set_grad_enabled(grad):
        z, ladj = layer(x)
        x_back, ladj_inv = layer.inverse(z_ref)  # the D-pass inversion of the subclass
    assert torch.allclose(z, z_ref) and torch.allclose(ladj, ladj_ref)
    assert torch.allclose(x_back, x) and torch.allclose(ladj_inv, -ladj_ref)


def test_made_subclass_in_a_chain_runs_its_forward() -> None:
    torch.manual_seed(4)
    first, second = _made_layer(), _made_layer()
    chain = ff.Compose([first, second])
    x = torch.randn(6, 4, dtype=torch.float64)
    z1, l1 = _made_reference(first, x)
    z2, l2 = _made_reference(second, z1)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            z, ladj = chain(x)
        assert torch.allclose(z, z2) and torch.allclose(ladj, l1 + l2)
    iaf = ff.Compose([second.inv, first.inv])  # sampling direction of the chain, one pass
    with torch.no_grad():
        x_back, ladj_back = iaf(z2)
    assert torch.allclose(x_back, x) and torch.allclose(ladj_back, -(l1 + l2))


def test_made_subclass_with_a_spline_runs_its_forward() -> None:
    """The spline asks a MADE for parameter-major outputs: a subclass gets its own call."""
    torch.manual_seed(5)
    spline = T.RationalQuadraticSpline(4, 2.0)
    made = ShiftedMADE(3, spline.params_per_dim, hidden=(12,))
    layer = randomize(T.MaskedAutoregressive(spline, made)).double()
    x = torch.randn(8, 3, dtype=torch.float64)
    z_ref, ladj_ref = spline(x, made(x).unflatten(-1, (3, spline.params_per_dim)))
    z, ladj = layer(x)
    x_back, _ = layer.inverse(z_ref)
    assert torch.allclose(z, z_ref) and torch.allclose(ladj, ladj_ref.sum(-1))
    assert torch.allclose(x_back, x)


def test_masked_autoregressive_needs_a_made() -> None:
    with pytest.raises(TypeError, match="MADE"):
        T.MaskedAutoregressive(T.Affine(), ff.nn.MLP(4, 8))  # type: ignore[arg-type]


def test_exact_modules_still_take_the_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard is not simply 'never fuse': exact MLP / MADE layers do reach the kernels."""
    import flowforge.transforms.autoregressive as ar
    import flowforge.transforms.coupling as cp

    calls: list[str] = []

    def spy(name: str, fn):  # type: ignore[no-untyped-def]
        def wrapped(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(name)
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(cp, "coupling_inference", spy("inference", cp.coupling_inference))
    monkeypatch.setattr(cp, "coupling_chain", spy("chain", cp.coupling_chain))
    monkeypatch.setattr(ar, "made_affine_chain", spy("made", ar.made_affine_chain))
    x = torch.randn(5, 4, dtype=torch.float64)
    exact = _coupling(ff.nn.MLP)
    exact(x)
    with torch.no_grad():
        exact(x)
    made = randomize(T.MaskedAutoregressive(T.Affine(), ff.nn.MADE(4, 2, hidden=(8,)))).double()
    made(x)
    assert calls == ["chain", "inference", "made"]
    calls.clear()
    _coupling()(x)
    with torch.no_grad():
        _coupling()(x)
    _made_layer()(x)
    assert calls == []


def test_compose_checks_neighbouring_shapes() -> None:
    with pytest.raises(ValueError, match=r"bijection 1 \(ActNorm\).*\(5,\).*bijection 0.*\(3,\)"):
        ff.Compose([T.ActNorm(3), T.ActNorm(5)])
    with pytest.raises(ValueError, match=r"bijection 3 \(LULinear\).*\(5,\).*outputs.*\(6,\)"):
        ff.Compose([T.ActNorm((2, 3)), T.Reshape((2, 3), (6,)), T.LULinear(6), T.LULinear(5)])
    with pytest.raises(ValueError, match=r"bijection 1 \(LULinear\).*\(2, 3\)"):
        ff.Compose([T.Reshape((2, 3), (6,)).inv, T.LULinear(6)])
    chain = ff.Compose([T.ActNorm((2, 3)), T.Reshape((2, 3), (6,)), T.LULinear(6)])
    assert chain.forward_shape((2, 3)) == (6,) and chain.inv.event_shape == (6,)
    assert chain.inv.inverse_shape((2, 3)) == (6,)


def test_inverse_event_shape_is_the_latent_shape() -> None:
    flatten = T.Reshape((2, 3, 4), (24,))
    assert flatten.inv.event_shape == (24,)
    assert flatten.inv.forward_shape((24,)) == (2, 3, 4)
    # An inverted reshaping bijection composes where its latent fits.
    ff.Compose([T.LULinear(24), flatten.inv, T.ActNorm((2, 3, 4))])
