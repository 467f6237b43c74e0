"""Each vector preset, and affine layers on tanh networks, with its fused kernels equals
the plain composition of its modules.

``flowforge.functional.plain_modules()`` switches every fused kernel off (the coupling and
masked-autoregressive inference kernels, the fused training chains, the affine and spline
autograd nodes). Inside it the flow must enter no kernel at all (each is patched to raise),
outside it the kernels must run (each is counted), so that the comparison in float64 with
random parameters is one between two different code paths: densities, sampling direction,
and gradients with respect to the parameters, the inputs and the context.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch

import flowforge as ff
import flowforge.transforms.autoregressive as autoregressive_module
import flowforge.transforms.coupling as coupling_module
from flowforge.functional.affine import AffineFunction
from flowforge.functional.coupling_chain import CouplingChain
from flowforge.functional.made_affine import MadeAffineChain
from flowforge.functional.splines import _SplineFunction
from registry import randomize

F64 = torch.float64
D, C = 5, 3
VECTOR = ["nice", "realnvp", "maf", "iaf", "nsf", "tanh_coupling", "tanh_made"]

# Kernel functions, patched where the transforms look them up.
FUNCTIONS: list[tuple[Any, str]] = [
    (coupling_module, "coupling_inference"),
    (coupling_module, "coupling_chain"),
    (autoregressive_module, "made_affine_chain"),
    (autoregressive_module, "made_affine_inference"),
    (autoregressive_module, "made_affine_inverse_inference"),
]
# Fused autograd nodes, patched on the class (whoever calls them).
NODES: list[type[torch.autograd.Function]] = [
    AffineFunction,
    CouplingChain,
    MadeAffineChain,
    _SplineFunction,
]


def _patch_kernels(
    monkeypatch: pytest.MonkeyPatch, wrap: Callable[[str, Callable[..., Any]], Callable[..., Any]]
) -> None:
    for owner, name in FUNCTIONS:
        monkeypatch.setattr(owner, name, wrap(name, getattr(owner, name)))
    for node in NODES:
        monkeypatch.setattr(node, "apply", staticmethod(wrap(node.__name__, node.apply)))


def forbid_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every fused kernel raise when entered."""

    def wrap(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def raising(*args: Any, **kw: Any) -> Any:
            raise AssertionError(f"the fused kernel {name} ran inside plain_modules()")

        return raising

    _patch_kernels(monkeypatch, wrap)


def count_kernels(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count the entries into every fused kernel (which then runs as usual)."""
    calls: Counter[str] = Counter()

    def wrap(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def counting(*args: Any, **kw: Any) -> Any:
            calls[name] += 1
            return real(*args, **kw)

        return counting

    _patch_kernels(monkeypatch, wrap)
    return calls


@contextmanager
def plain(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``plain_modules()``, with every kernel made to raise while it is on."""
    with monkeypatch.context() as m:
        forbid_kernels(m)
        with ff.functional.plain_modules():
            yield


def _tanh_flow(kind: str, context: int) -> ff.Flow:
    """Affine layers whose networks are not ReLU: no fused chain implements them, so with
    gradients each runs as a module whose affine transformer is the fused affine node."""
    t = ff.transforms
    layers: list[ff.Bijection] = []
    for _ in range(2):
        affine = t.Affine(2.0)
        if kind == "coupling":
            na = (D + 1) // 2
            net = ff.nn.MLP(na + context, (D - na) * 2, (16,), activation=torch.nn.Tanh)
            layers.append(t.Coupling(t.half_mask(D), affine, net, context=context))
        else:
            made = ff.nn.MADE(D, 2, (16,), context=context, activation=torch.nn.Tanh)
            layers.append(t.MaskedAutoregressive(affine, made))
        layers.append(t.ReversePermutation(D))
    return ff.Flow(ff.Compose(layers), ff.distributions.StandardNormal(D), context=context)


def make(name: str, context: int) -> ff.Flow:
    if name.startswith("tanh_"):
        flow = _tanh_flow(name.removeprefix("tanh_"), context).double()
    else:
        kw: dict[str, Any] = {"bins": 4} if name == "nsf" else {}
        flow = ff.flows.PRESETS[name](
            features=D, context=context, transforms=3, hidden=(16, 12), **kw
        ).double()
    randomize(flow, 0.3)
    return flow.eval()


def evaluate(flow: ff.Flow, x: torch.Tensor, z: torch.Tensor, c: torch.Tensor | None) -> dict:
    """Density and sampling direction, without and with gradients (parameters and inputs)."""
    params = [p for p in flow.parameters() if p.requires_grad]
    out: dict[str, Any] = {}
    with torch.no_grad():
        out["log_prob"] = flow.log_prob(x, c)
        out["inverse"], out["inverse_ladj"] = flow.bijection.inverse(z, c)
    # Gradients with respect to the parameters, the inputs and the context.
    cg = None if c is None else c.clone().requires_grad_()
    xg = x.clone().requires_grad_()
    inputs = [xg, *params] + ([] if cg is None else [cg])
    lp = flow.log_prob(xg, cg)
    out["log_prob_grad"] = lp.detach()
    out["d_log_prob"] = torch.autograd.grad(lp.square().sum(), inputs)
    zg = z.clone().requires_grad_()
    inputs[0] = zg
    xs, ladj = flow.bijection.inverse(zg, cg)
    out["inverse_grad"] = xs.detach()
    out["d_inverse"] = torch.autograd.grad((xs.sin().sum(-1) + ladj).square().sum(), inputs)
    return out


def _data(context: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    gen = torch.Generator().manual_seed(1)
    x = 1.5 * torch.randn(40, D, dtype=F64, generator=gen)
    z = torch.randn(40, D, dtype=F64, generator=gen)
    c = torch.randn(40, context, dtype=F64, generator=gen) if context else None
    return x, z, c


@pytest.mark.parametrize("context", [0, C])
@pytest.mark.parametrize("name", VECTOR)
def test_kernels_equal_the_plain_modules(
    name: str, context: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = make(name, context)
    x, z, c = _data(context)
    calls = count_kernels(monkeypatch)
    fast = evaluate(flow, x, z, c)
    assert sum(calls.values()) > 0, f"{name}: no fused kernel ran, nothing is compared"
    with plain(monkeypatch):
        assert not ff.functional.eager_kernels_allowed()
        reference = evaluate(flow, x, z, c)
    # The flow is not the identity: the comparison has something to see.
    base = flow.base.log_prob(x)
    assert not torch.allclose(reference["log_prob"], base, atol=1e-3)
    for key, ref in reference.items():
        got = fast[key]
        if isinstance(ref, tuple):
            for i, (g, r) in enumerate(zip(got, ref)):
                torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10, msg=f"{key}[{i}]")
        else:
            torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10, msg=key)


# Where each preset's kernels run by default: (direction, gradients) -> kernels entered.
EXPECTED: dict[str, dict[tuple[str, bool], set[str]]] = {
    "nice": {
        ("log_prob", False): {"coupling_inference"},
        ("log_prob", True): {"coupling_chain", "CouplingChain"},
        ("inverse", False): {"coupling_inference"},
    },
    "realnvp": {
        ("log_prob", False): {"coupling_inference"},
        ("log_prob", True): {"coupling_chain", "CouplingChain"},
        ("inverse", False): {"coupling_inference"},
    },
    "maf": {
        ("log_prob", False): {"made_affine_inference"},
        ("log_prob", True): {"made_affine_chain", "MadeAffineChain"},
        ("inverse", False): {"made_affine_inverse_inference"},
    },
    "iaf": {
        ("log_prob", False): {"made_affine_inverse_inference"},
        ("inverse", False): {"made_affine_inference"},
    },
    "nsf": {
        ("log_prob", True): {"_SplineFunction"},
        ("inverse", True): {"_SplineFunction"},
    },
    "tanh_coupling": {("log_prob", True): {"AffineFunction"}},
    "tanh_made": {("log_prob", True): {"AffineFunction"}},
}


@pytest.mark.parametrize("name", VECTOR)
def test_the_kernels_run_without_the_switch_and_not_with_it(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = make(name, C)
    x, z, c = _data(C)
    calls = count_kernels(monkeypatch)
    for (direction, grad), kernels in EXPECTED[name].items():
        calls.clear()
        inp = (x if direction == "log_prob" else z).clone().requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            if direction == "log_prob":
                flow.log_prob(inp, c)
            else:
                flow.bijection.inverse(inp, c)
            assert kernels <= set(calls), (direction, grad, dict(calls))
            # The same call inside the switch: no kernel is entered at all.
            calls.clear()
            with ff.functional.plain_modules():
                if direction == "log_prob":
                    flow.log_prob(inp, c)
                else:
                    flow.bijection.inverse(inp, c)
            assert not calls, (direction, grad, dict(calls))


def test_the_switch_nests_and_restores() -> None:
    assert ff.functional.eager_kernels_allowed()
    with ff.functional.plain_modules():
        with ff.functional.plain_modules():
            assert not ff.functional.eager_kernels_allowed()
        assert not ff.functional.eager_kernels_allowed()
    assert ff.functional.eager_kernels_allowed()
    with pytest.raises(RuntimeError), ff.functional.plain_modules():
        raise RuntimeError
    assert ff.functional.eager_kernels_allowed()
