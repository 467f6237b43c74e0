"""The coupling layers' no-grad kernel against their module path (float64), both directions."""

from __future__ import annotations

import pytest
import torch

import flowforge as ff
import flowforge.transforms.coupling as coupling_module
from flowforge.functional.coupling_inference import coupling_inference


def _layer(kind: str, context: int, features: int) -> ff.transforms.Coupling:
    torch.manual_seed(0)
    t = ff.transforms.Affine(2.0) if kind == "affine" else ff.transforms.Additive()
    na = (features + 1) // 2
    net = ff.nn.MLP(na + context, (features - na) * t.params_per_dim, hidden=(16, 12))
    layer = ff.transforms.Coupling(ff.transforms.half_mask(features), t, net, context).double()
    with torch.no_grad():
        net.flat.normal_(0.0, 0.4)
    return layer


@pytest.mark.parametrize("kind", ["affine", "additive"])
@pytest.mark.parametrize("context", [0, 3])
@pytest.mark.parametrize("chunk", [5, 4096])
@pytest.mark.parametrize("features", [7, 70])  # interleaved and blocked output layouts
def test_kernel_matches_module_path(kind: str, context: int, chunk: int, features: int) -> None:
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
        ref = layer._inverse(x, c) if inverse else layer._forward(x, c)  # module path
        torch.testing.assert_close(y, ref[0].detach(), rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(ladj, ref[1].detach(), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", ["NICE", "RealNVP"])
def test_presets_use_it_without_gradients_only(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    flow = ff.flows.PRESETS[name.lower()](features=6, context=2, transforms=3, hidden=(8,))
    flow = flow.double().eval()
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.3)
    calls = {"n": 0}
    real = coupling_module.coupling_inference

    def counting(*args, **kw):
        calls["n"] += 1
        return real(*args, **kw)

    monkeypatch.setattr(coupling_module, "coupling_inference", counting)
    x = torch.randn(30, 6, dtype=torch.float64)
    c = torch.randn(30, 2, dtype=torch.float64)
    with torch.no_grad():
        fast = flow.log_prob(x, c)
        assert calls["n"] == 3
        samples = flow.sample(4, c[:2])
        assert calls["n"] == 6 and samples.shape == (4, 2, 6)
    calls["n"] = 0
    slow = flow.log_prob(x, c)
    assert calls["n"] == 0 and slow.requires_grad
    torch.testing.assert_close(fast, slow.detach(), rtol=1e-12, atol=1e-12)
