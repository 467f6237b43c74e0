"""The fused kernels and the conditioner options: which path runs, and the same numbers.

The kernels implement exactly a ReLU MLP / MADE without dropout: a tanh network, dropout in
training mode or a residual network must run the plain modules, and give the numbers of
:func:`flowforge.functional.plain_modules` (the reference path); the default options, a
random permutation and dropout in eval mode (where it is the identity) keep the kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

import flowforge as ff
import flowforge.transforms.autoregressive as ar
import flowforge.transforms.coupling as cp
from registry import randomize

D, C = 5, 2
FLOWS = {
    "nice": ff.flows.NICE,
    "realnvp": ff.flows.RealNVP,
    "maf": ff.flows.MAF,
    "iaf": ff.flows.IAF,
}
KERNELS = [
    (cp, "coupling_inference"),
    (cp, "coupling_chain"),
    (ar, "made_affine_chain"),
    (ar, "made_affine_inference"),
    (ar, "made_affine_inverse_inference"),
]
#: Options (and the mode the flow runs in) that the kernels do not implement.
PLAIN = {
    "tanh": ({"activation": "tanh"}, "eval"),
    "silu": ({"activation": "silu"}, "eval"),
    "dropout-train": ({"dropout": 0.3}, "train"),
    "residual": ({"residual_blocks": 1}, "eval"),
    "residual-train": ({"residual_blocks": 2}, "train"),
}
#: Options the kernels do implement.
FUSED = {
    "default": ({}, "eval"),
    "default-train": ({}, "train"),
    "random": ({"permutation": "random"}, "train"),
    "dropout-eval": ({"dropout": 0.3}, "eval"),
}

#: Kernels that outputs() reaches with the default options (IAF's density with gradients is
#: the plain D-pass inversion: no kernel).
EXPECTED = {
    "nice": {"coupling_chain", "coupling_inference"},
    "realnvp": {"coupling_chain", "coupling_inference"},
    "maf": {"made_affine_chain", "made_affine_inference", "made_affine_inverse_inference"},
    "iaf": {"made_affine_inference", "made_affine_inverse_inference"},
}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the fused kernels called, in order."""
    seen: list[str] = []

    def spy(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            seen.append(name)
            return fn(*args, **kwargs)

        return wrapped

    for module, name in KERNELS:
        monkeypatch.setattr(module, name, spy(name, getattr(module, name)))
    return seen


def make(name: str, options: dict[str, Any], mode: str) -> ff.Flow:
    torch.manual_seed(0)
    flow = FLOWS[name](features=D, context=C, transforms=3, hidden=(16, 16), **options)
    randomize(flow).double()
    return flow.train(mode == "train")


def outputs(flow: ff.Flow) -> list[Tensor]:
    """log_prob and its gradients (training), log_prob and samples without gradients; the
    random generator reset before each, so that dropout draws the same masks on any path."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(9, D, generator=gen, dtype=torch.float64)
    c = torch.randn(9, C, generator=gen, dtype=torch.float64)
    torch.manual_seed(2)
    lp = flow.log_prob(x, c)
    params = [p for p in flow.parameters() if p.requires_grad]
    grads = torch.autograd.grad(lp.sum(), params, allow_unused=True)
    out = [lp.detach(), *(g for g in grads if g is not None)]
    with torch.no_grad():
        torch.manual_seed(3)
        out.append(flow.log_prob(x, c))
        torch.manual_seed(4)
        out.append(flow.sample(4, c))
    return out


def same(a: list[Tensor], b: list[Tensor]) -> bool:
    return len(a) == len(b) and all(torch.allclose(u, v, atol=1e-9) for u, v in zip(a, b))


@pytest.mark.parametrize("option", PLAIN)
@pytest.mark.parametrize("name", FLOWS)
def test_options_the_kernels_do_not_implement_run_the_plain_path(
    name: str, option: str, calls: list[str]
) -> None:
    flow = make(name, *PLAIN[option])
    got = outputs(flow)
    assert calls == [], f"{name} with {option}: fused kernels {sorted(set(calls))} ran"
    with ff.functional.plain_modules():
        assert same(got, outputs(flow))


@pytest.mark.parametrize("option", FUSED)
@pytest.mark.parametrize("name", FLOWS)
def test_options_the_kernels_implement_keep_them(name: str, option: str, calls: list[str]) -> None:
    flow = make(name, *FUSED[option])
    got = outputs(flow)
    assert EXPECTED[name] <= set(calls), f"{name} with {option}: only {sorted(set(calls))} ran"
    calls.clear()
    with ff.functional.plain_modules():
        reference = outputs(flow)
    assert calls == []
    assert same(got, reference)


def test_dropout_switched_on_after_construction_leaves_the_kernels(calls: list[str]) -> None:
    """The check is made per call: the same layers fuse in eval mode and not in training."""
    flow = make("realnvp", {"dropout": 0.5}, "eval")
    outputs(flow)
    assert calls
    calls.clear()
    outputs(flow.train())
    assert calls == []
