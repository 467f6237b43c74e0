"""ODENet folds a gate and shift shared by every row into its weights and bias.

With one scalar time and no context, each layer's ``(W h + b) * g + s`` is computed as
``(W * g^T) h + (b * g + s)``. In float64 with random non-zero parameters it equals the
unfolded layers (written out here, and the network's own per-row path: the same time given
once per row) in values and in gradients w.r.t. the parameters, the state and the time, in
``forward`` and ``forward_and_jvp``, and through a CNF's exact trace, Hutchinson trace and
adjoint.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import flowforge as ff
import flowforge.nn.ode as ode
from registry import randomize, tight_cnf

F64 = torch.float64


def _net(activation: str = "softplus") -> ff.nn.ODENet:
    torch.manual_seed(0)
    net = ff.nn.ODENet(3, (7, 5), activation=activation, zero_last=False)
    return randomize(net, 0.6).to(F64)  # type: ignore[return-value]


def _unfolded(net: ff.nn.ODENet, t: Tensor, z: Tensor) -> Tensor:
    """The concat-squash layers written out: ``(W h + b) * sigmoid(gate) + shift``."""
    act = ode.ACTIVATIONS[net.activation][0]
    layers = net.layers()
    h = z
    for k, (w, b, hw, hb) in enumerate(layers):
        gs = hw[:, 0] * t + hb  # (2 out,): the time is the only conditioning input
        gate, shift = gs.chunk(2)
        h = (h @ w.T + b) * torch.sigmoid(gate) + shift
        if k < len(layers) - 1:
            h = act(h)
    return h


def _per_row(t: Tensor, n: int) -> Tensor:
    return t.expand(n)  # (N,): the per-row path, which does not fold


def _grads(out: Tensor, wrt: list[Tensor], w: Tensor) -> tuple[Tensor, ...]:
    return torch.autograd.grad((out * w).sum(), wrt)


def _close(a: Tensor, b: Tensor, tol: float = 1e-12) -> None:
    assert torch.allclose(a, b, atol=tol, rtol=tol), (a - b).abs().max()


@pytest.mark.parametrize("activation", sorted(ode.ACTIVATIONS))
def test_folded_forward_equals_the_unfolded_layers(
    monkeypatch: pytest.MonkeyPatch, activation: str
) -> None:
    net = _net(activation)
    z = torch.randn(9, 3, dtype=F64, requires_grad=True)
    t = torch.tensor(0.37, dtype=F64, requires_grad=True)
    calls: list[int] = []
    folded = ode._folded
    monkeypatch.setattr(ode, "_folded", lambda *a: calls.append(1) or folded(*a))
    out = net(t, z)
    assert len(calls) == 3  # every layer folded
    w = torch.randn_like(out)
    grads = _grads(out, [net.flat, z, t], w)
    for ref in (_unfolded(net, t, z), net(_per_row(t, 9), z)):
        _close(out, ref)
        for g, r in zip(grads, _grads(ref, [net.flat, z, t], w)):
            _close(g, r)
    assert len(calls) == 3  # the per-row time did not fold


@pytest.mark.parametrize("tangents", [None, 2], ids=["jacobian", "probes"])
def test_folded_jvp_equals_the_per_row_path(tangents: int | None) -> None:
    net = _net("tanh")
    z = torch.randn(6, 3, dtype=F64, requires_grad=True)
    t = torch.tensor(0.8, dtype=F64, requires_grad=True)
    v = None if tangents is None else torch.randn(6, tangents, 3, dtype=F64)
    f, jv = net.forward_and_jvp(t, z, v)
    f_ref, jv_ref = net.forward_and_jvp(_per_row(t, 6), z, v)
    _close(f, f_ref)
    _close(jv, jv_ref)
    if tangents is None:  # and the Jacobian is autograd's, transposed
        jac = torch.autograd.functional.jacobian(lambda x: _unfolded(net, t, x).sum(0), z)
        _close(jv, jac.permute(1, 2, 0))
    wf, wj = torch.randn_like(f), torch.randn_like(jv)
    wrt = [net.flat, z, t]
    g = torch.autograd.grad((f * wf).sum() + (jv * wj).sum(), wrt)
    g_ref = torch.autograd.grad((f_ref * wf).sum() + (jv_ref * wj).sum(), wrt)
    for a, b in zip(g, g_ref):
        _close(a, b)


def _unfold_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """The network's scalar times become one time per row: nothing folds."""
    conditioning = ff.nn.ODENet._conditioning

    def per_row(self: ff.nn.ODENet, t: Tensor, z: Tensor, context: Tensor | None) -> Tensor:
        return conditioning(self, _per_row(t, z.shape[0]) if t.dim() == 0 else t, z, context)

    monkeypatch.setattr(ff.nn.ODENet, "_conditioning", per_row)
    monkeypatch.setattr(ode, "_folded", _never)


class Folded(Exception):
    """Raised where nothing may fold (not an AssertionError: the solver catches those)."""


def _never(*args: object) -> None:
    raise Folded


@pytest.mark.parametrize(
    ("trace", "adjoint"),
    [("exact", False), ("hutchinson", False), ("exact", True), ("hutchinson", True)],
)
def test_cnf_with_folding_equals_the_unfolded_cnf(
    monkeypatch: pytest.MonkeyPatch, trace: str, adjoint: bool
) -> None:
    """Log-density and its gradients w.r.t. the parameters, the data and the learned time."""
    torch.manual_seed(1)
    net = randomize(ff.nn.ODENet(3, (8,), zero_last=False), 0.5)
    cnf = tight_cnf(
        net, 3, time=0.6, learn_time=True, trace=trace, adjoint=adjoint, rtol=1e-11, atol=1e-11
    )
    cnf = cnf.to(F64).train()  # type: ignore[assignment]
    x = torch.randn(5, 3, dtype=F64)

    def run() -> tuple[Tensor, ...]:
        torch.manual_seed(2)  # the same Hutchinson probes
        xg = x.clone().requires_grad_()
        z, ladj = cnf(xg)
        w = torch.randn_like(z)
        loss = (z * w).sum() + ladj.square().sum()
        return (z, ladj, *torch.autograd.grad(loss, [cnf.net.flat, cnf.log_time, xg]))

    calls: list[int] = []
    fold = ode._folded
    monkeypatch.setattr(ode, "_folded", lambda *a: calls.append(1) or fold(*a))
    folded = run()
    assert calls  # the solve folded
    _unfold_everywhere(monkeypatch)
    for a, b in zip(folded, run()):
        _close(a, b, 1e-8)
