"""The coupling layers' no-grad kernel against their module path (float64), both directions.

The reference is the plain composition of the layer's modules: it runs inside
``plain_modules()``, where every fused kernel (this one, the training chain, the affine
autograd node) is patched to raise, so kernel and reference are different code paths.
"""

from __future__ import annotations

import pytest
import torch

import flowforge as ff
from flowforge.functional.coupling_inference import coupling_inference
from test_plain_modules import count_kernels, plain


def _layer(kind: str, context: int, features: int) -> ff.transforms.Coupling:
    torch.manual_seed(0)
    t = ff.transforms.Affine(2.0) if kind == "affine" else ff.transforms.Additive()
    na = (features + 1) // 2
    net = ff.nn.MLP(na + context, (features - na) * t.params_per_dim, hidden=(16, 12))
    layer = ff.transforms.Coupling(
        ff.transforms.half_mask(features), t, net, context=context
    ).double()
    with torch.no_grad():
        net.flat.normal_(0.0, 0.4)
    return layer


@pytest.mark.parametrize("kind", ["affine", "additive"])
@pytest.mark.parametrize("context", [0, 3])
@pytest.mark.parametrize("chunk", [5, 4096])
@pytest.mark.parametrize("features", [7, 70])  # interleaved and blocked output layouts
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_kernel_matches_module_path(
    kind: str, context: int, chunk: int, features: int, grad: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = _layer(kind, context, features)
    gen = torch.Generator().manual_seed(1)
    x = 2 * torch.randn(40, features, dtype=torch.float64, generator=gen)
    c = torch.randn(40, context, dtype=torch.float64, generator=gen) if context else None
    bound = 2.0 if kind == "affine" else None
    for inverse in (False, True):
        with torch.no_grad():
            y, ladj = coupling_inference(
                x, c, layer.split, layer.net.layers(), bound, inverse, chunk
            )
        # The module path, with or without gradients: no kernel may run.
        with plain(monkeypatch), torch.set_grad_enabled(grad):
            ref = layer.inverse(x, c) if inverse else layer(x, c)
        assert ref[0].requires_grad == grad
        torch.testing.assert_close(y, ref[0].detach(), rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(ladj, ref[1].detach(), rtol=1e-13, atol=1e-13)
        if kind == "affine":  # a layer that does something: log-dets not all zero
            assert bool((ladj.abs() > 1e-3).any())


@pytest.mark.parametrize("name", ["NICE", "RealNVP"])
def test_presets_use_it_without_gradients_only(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    flow = ff.flows.PRESETS[name.lower()](features=6, context=2, transforms=3, hidden=(8,))
    flow = flow.double().eval()
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.3)
    calls = count_kernels(monkeypatch)
    x = torch.randn(30, 6, dtype=torch.float64)
    c = torch.randn(30, 2, dtype=torch.float64)
    with torch.no_grad():
        fast = flow.log_prob(x, c)
        assert calls["coupling_inference"] == 3
        samples = flow.sample(4, c[:2])
        assert calls["coupling_inference"] == 6 and samples.shape == (4, 2, 6)
    calls.clear()
    trained = flow.log_prob(x, c)  # with gradients: the fused training chain instead
    assert calls["coupling_inference"] == 0 and calls["coupling_chain"] >= 1
    assert trained.requires_grad
    with plain(monkeypatch):  # the reference: the modules, no kernel
        slow = flow.log_prob(x, c)
        assert slow.requires_grad
    torch.testing.assert_close(fast, slow.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(trained.detach(), slow.detach(), rtol=1e-12, atol=1e-12)
    # The same noise through the kernel and through the modules.
    torch.manual_seed(5)
    with torch.no_grad():
        samples = flow.sample(4, c[:2])
    torch.manual_seed(5)
    with plain(monkeypatch), torch.no_grad():
        slow_samples = flow.sample(4, c[:2])
    torch.testing.assert_close(samples, slow_samples, rtol=1e-12, atol=1e-12)
