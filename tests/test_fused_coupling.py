"""The fused coupling chain (RealNVP / NICE layers and permutations as one autograd node)
against the composition it replaces: values, first and second derivatives in float64, and
that RealNVP and NICE training take it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import flowforge as ff
import flowforge.transforms.coupling as coupling_mod
from flowforge.functional.coupling_chain import CouplingChain, CouplingStep, coupling_reference
from flowforge.nn.mlp import MLP


def _chain(
    d: int, context: int, hidden: tuple[int, ...], layers: int, affine: bool, lead_perm: bool
) -> tuple[list, list[torch.Tensor]]:
    """Steps and flat parameters: couplings with a permutation between each two."""
    torch.manual_seed(layers + d)
    split = (d + 1) // 2
    steps: list = []
    flats = []
    perm = torch.randperm(d)
    if lead_perm:
        steps.append((perm, perm.argsort()))
    for i in range(layers):
        if i:
            rev = torch.arange(d - 1, -1, -1)
            steps.append((rev, rev))
        p = 2 if affine else 1
        net = MLP(split + context, (d - split) * p, hidden, zero_last=False).double()
        steps.append(CouplingStep(split, context, tuple(net.shapes), 2.0 if affine else None))
        flats.append(net.flat.detach().normal_(0.0, 0.5).clone())
    return steps, flats


def _composed(steps: list) -> Callable:
    def fn(x: torch.Tensor, c: torch.Tensor | None, *flats: torch.Tensor):
        total = torch.zeros(x.shape[0], dtype=x.dtype)
        it = iter(flats)
        for s in steps:
            if isinstance(s, CouplingStep):
                x, ladj = coupling_reference(x, c, s, next(it))
                total = total + ladj
            else:
                x = x[:, s[0]]
        return x, total

    return fn


CASES = [
    (5, 0, (7,), 1, True, False),
    (5, 3, (9, 6), 3, True, True),
    (8, 0, (6, 5), 2, False, False),
    (6, 2, (), 2, False, True),
    (9, 2, (4,), 2, True, False),
]


@pytest.mark.parametrize(("d", "context", "hidden", "layers", "affine", "lead"), CASES)
def test_gradcheck_and_gradgradcheck(
    d: int, context: int, hidden: tuple[int, ...], layers: int, affine: bool, lead: bool
) -> None:
    steps, flats = _chain(d, context, hidden, layers, affine, lead)
    x = torch.randn(3, d, dtype=torch.float64, requires_grad=True)
    flats = [f.requires_grad_() for f in flats]
    if context:
        c = torch.randn(3, context, dtype=torch.float64, requires_grad=True)
        inputs: tuple[torch.Tensor, ...] = (x, c, *flats)
        f = lambda a, b, *p: CouplingChain.apply(a, b, steps, *p)  # noqa: E731
    else:
        inputs = (x, *flats)
        f = lambda a, *p: CouplingChain.apply(a, None, steps, *p)  # noqa: E731
    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs, fast_mode=True)


@pytest.mark.parametrize(("d", "context", "hidden", "layers", "affine", "lead"), CASES)
def test_equals_the_composition(
    d: int, context: int, hidden: tuple[int, ...], layers: int, affine: bool, lead: bool
) -> None:
    steps, flats = _chain(d, context, hidden, layers, affine, lead)
    x = torch.randn(50, d, dtype=torch.float64)
    c = torch.randn(50, context, dtype=torch.float64) if context else None
    gz, gl = torch.randn(50, d, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    results = []
    for fn in (lambda *a: CouplingChain.apply(a[0], a[1], steps, *a[2:]), _composed(steps)):
        xs = x.clone().requires_grad_()
        cs = None if c is None else c.clone().requires_grad_()
        ps = [f.clone().requires_grad_() for f in flats]
        z, ladj = fn(xs, cs, *ps)
        ((z * gz).sum() + (ladj * gl).sum()).backward()
        results.append(
            [z, ladj, xs.grad, *([] if cs is None else [cs.grad]), *[p.grad for p in ps]]
        )
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_frozen_layers_and_data_without_gradient() -> None:
    steps, flats = _chain(6, 0, (8,), 3, True, False)
    x = torch.randn(20, 6, dtype=torch.float64)  # data: no gradient wanted
    flats[1].requires_grad_()  # only the middle layer trains
    z, ladj = CouplingChain.apply(x, None, steps, *flats)
    (z.square().sum() + ladj.sum()).backward()
    assert flats[0].grad is None and flats[2].grad is None
    ref = flats[1].detach().clone().requires_grad_()
    z2, l2 = _composed(steps)(x, None, flats[0], ref, flats[2])
    (z2.square().sum() + l2.sum()).backward()
    torch.testing.assert_close(flats[1].grad, ref.grad)


def test_one_output_used() -> None:
    steps, flats = _chain(5, 0, (8,), 2, True, False)
    ps = [f.requires_grad_() for f in flats]
    x = torch.randn(10, 5, dtype=torch.float64)
    _, ladj = CouplingChain.apply(x, None, steps, *ps)
    ladj.sum().backward()  # z unused: its gradient is None
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in ps)


def _count_chain_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = CouplingChain.forward

    def counting(ctx, x, context, steps, *flats):  # type: ignore[no-untyped-def]
        calls.append(sum(isinstance(s, CouplingStep) for s in steps))
        return original(ctx, x, context, steps, *flats)

    monkeypatch.setattr(CouplingChain, "forward", staticmethod(counting))
    return calls


@pytest.mark.parametrize("name", ["RealNVP", "NICE"])
@pytest.mark.parametrize("context", [0, 2])
def test_preset_training_is_one_node_and_matches_the_module_path(
    name: str, context: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    flow = getattr(ff.flows, name)(features=6, context=context, transforms=4, hidden=(16,))
    flow = flow.double()
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.3)
    x = torch.randn(30, 6, dtype=torch.float64)
    c = torch.randn(30, context, dtype=torch.float64) if context else None
    calls = _count_chain_calls(monkeypatch)
    lp = flow.log_prob(x, c) if context else flow.log_prob(x)
    grads = torch.autograd.grad(lp.mean(), list(flow.parameters()))
    assert calls == [4]  # every coupling in one node (NICE's final ActNorm runs after it)
    monkeypatch.setattr(coupling_mod.Coupling, "_fused", lambda self, x, context: False)
    lp2 = flow.log_prob(x, c) if context else flow.log_prob(x)
    grads2 = torch.autograd.grad(lp2.mean(), list(flow.parameters()))
    assert calls == [4]
    torch.testing.assert_close(lp, lp2, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, grads2):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_single_coupling_layer_trains_fused(monkeypatch: pytest.MonkeyPatch) -> None:
    t = ff.transforms.Affine()
    layer = ff.transforms.Coupling([True, True, False], t, MLP(2, 2, (8,), zero_last=False))
    calls = _count_chain_calls(monkeypatch)
    z, ladj = layer(torch.randn(4, 3))
    (z.sum() + ladj.sum()).backward()
    assert calls == [1]
    assert layer.net.flat.grad is not None


def test_inference_and_compiled_paths_do_not_take_it(monkeypatch: pytest.MonkeyPatch) -> None:
    flow = ff.flows.RealNVP(features=4, transforms=2, hidden=(8,))
    calls = _count_chain_calls(monkeypatch)
    with torch.no_grad():
        flow.log_prob(torch.randn(5, 4))
    flow.sample(3)
    assert calls == []


def test_extreme_inputs_stay_finite() -> None:
    torch.manual_seed(0)
    flow = ff.flows.RealNVP(features=4, transforms=3, hidden=(16,))
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 1.0)
    x = torch.tensor([[1e4, -1e4, 3.0, 0.0], [0.0, 0.0, -1e4, 1e4]])
    lp = flow.log_prob(x)
    lp.sum().backward()
    assert torch.isfinite(lp).all()
    assert all(torch.isfinite(p.grad).all() for p in flow.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", ["RealNVP", "NICE", "MAF", "NSF"])
def test_torch_func_through_a_preset(name: str) -> None:
    # torch.func cannot trace the fused autograd nodes; under its transforms every preset
    # takes its plain ops, with the same derivatives as autograd.
    torch.manual_seed(0)
    flow = getattr(ff.flows, name)(features=3, transforms=2, hidden=(8,)).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.3)
    x = torch.randn(3, dtype=torch.float64)

    def lp(x: torch.Tensor) -> torch.Tensor:
        return flow.log_prob(x.unsqueeze(0))[0]

    torch.testing.assert_close(torch.func.jacrev(lp)(x), torch.autograd.functional.jacobian(lp, x))
