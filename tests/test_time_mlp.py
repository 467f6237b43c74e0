"""The plain-MLP dynamics (:class:`flowforge.nn.TimeMLP`), FFJORD's ``dynamics`` option, its
flow-matching default on the command line, old runs' concat-squash, and the OT pairing's solvers.

The CNF contract (round trips, log-det against the autograd Jacobian in float64) runs on it
through the registry's ``cnf-mlp-dynamics`` case; here: its Jacobian kernel against autograd,
the CNF's fused and autograd paths against each other, and the recipe's defaults.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from scipy.optimize import linear_sum_assignment

import flowforge as ff
from flowforge.fit.objectives import _ot_pairing
from flowforge.functional.trace import jacobian_autograd
from flowforge.transforms import CNF
from registry import randomize

F64 = torch.float64


class PlainTimeMLP(ff.nn.TimeMLP):
    """The same network, not exactly a TimeMLP: the CNF takes its autograd path."""


@pytest.mark.parametrize(("activation", "freqs"), [("silu", 0), ("tanh", 0), ("gelu", 2)])
@pytest.mark.parametrize("context", [0, 2])
def test_forward_and_jvp_is_the_autograd_jacobian(
    context: int, activation: str, freqs: int
) -> None:
    net = ff.nn.TimeMLP(3, (8, 8), context=context, activation=activation, freqs=freqs)
    net = randomize(net, 0.5)
    net = net.to(F64)
    z = torch.randn(5, 3, dtype=F64, requires_grad=True)
    c = torch.randn(5, context, dtype=F64) if context else None
    for t in (torch.tensor(0.3, dtype=F64), torch.rand(5, dtype=F64)):
        f, jac_t = net.forward_and_jvp(t, z, context=c)
        assert torch.allclose(f, net(t, z, c), atol=1e-12)
        jac = jacobian_autograd(net(t, z, c), z, create_graph=False)  # (N, D, D)
        assert torch.allclose(jac_t, jac.transpose(-1, -2), atol=1e-12)
        e = torch.randn(5, 1, 3, dtype=F64)
        _, je = net.forward_and_jvp(t, z, e, c)
        assert torch.allclose(je[:, 0], torch.einsum("nij,nj->ni", jac, e[:, 0]), atol=1e-12)


def test_the_time_input_changes_the_velocity() -> None:
    net = randomize(ff.nn.TimeMLP(2, (8,)), 0.5)
    z = torch.randn(4, 2)
    assert not torch.allclose(net(torch.tensor(0.1), z), net(torch.tensor(0.9), z))


def test_reverse_time_feeds_one_minus_t() -> None:
    # Reference: the same weights without the option, evaluated at 1 - t (torchcfm's time).
    net = randomize(ff.nn.TimeMLP(2, (8,), context=1, reverse_time=True), 0.5).to(F64)
    ref = ff.nn.TimeMLP(2, (8,), context=1).to(F64)
    ref.flat.data.copy_(net.flat.data)
    z, c, t = torch.randn(4, 2, dtype=F64), torch.randn(4, 1, dtype=F64), torch.rand(4, dtype=F64)
    assert torch.allclose(net(t, z, c), ref(1 - t, z, c), atol=1e-12)
    f, jt = net.forward_and_jvp(t, z, context=c)
    f_ref, jt_ref = ref.forward_and_jvp(1 - t, z, context=c)
    assert torch.allclose(f, f_ref, atol=1e-12) and torch.allclose(jt, jt_ref, atol=1e-12)
    assert not torch.allclose(net(t, z, c), ref(t, z, c))


@pytest.mark.parametrize("reverse_time", [False, True])
def test_freqs_feed_fourier_features_of_the_time(reverse_time: bool) -> None:
    # Reference written out: act(W [z, tau, cos(pi k tau), sin(pi k tau), c] + b), tau = t or
    # 1 - t, then the linear output; GELU as x Phi(x).
    net = ff.nn.TimeMLP(2, (8,), context=1, activation="gelu", freqs=2, reverse_time=reverse_time)
    net = randomize(net, 0.5).to(F64)
    z, c, t = torch.randn(4, 2, dtype=F64), torch.randn(4, 1, dtype=F64), torch.rand(4, dtype=F64)
    tau = (1 - t if reverse_time else t)[:, None]
    k = torch.tensor([1.0, 2.0], dtype=F64) * torch.pi
    x = torch.cat([z, tau, torch.cos(k * tau), torch.sin(k * tau), c], -1)
    (w1, b1), (w2, b2) = net.layers()
    h = x @ w1.T + b1
    h = h * 0.5 * (1 + torch.erf(h / 2**0.5))
    assert torch.allclose(net(t, z, c), h @ w2.T + b2, atol=1e-12)
    assert w1.shape == (8, 2 + 1 + 4 + 1)
    with pytest.raises(ValueError, match="freqs >= 0"):
        ff.nn.TimeMLP(2, freqs=-1)


def test_a_flow_matching_run_saved_before_reverse_time_scores_as_it_did() -> None:
    # Written and scored by commit 4228ec8 (tests/fixtures/old_runs/README.md).
    old = Path(__file__).parent / "fixtures" / "old_runs"
    expected = json.loads((old / "fm_mlp_expected.json").read_text())
    flow = ff.load(old / "fm_mlp")
    net = next(m for m in flow.modules() if isinstance(m, CNF)).net
    assert type(net) is ff.nn.TimeMLP and net.reverse_time is False
    assert (net.activation, net.freqs) == ("tanh", 0)  # saved before flow matching's GELU
    with torch.no_grad():
        lp = flow.log_prob(torch.tensor(expected["points"])).tolist()
    assert lp == pytest.approx(expected["log_prob"], rel=1e-6, abs=1e-6)


def test_cnf_fused_and_autograd_paths_agree_in_float64() -> None:
    torch.manual_seed(0)
    fused = randomize(CNF(ff.nn.TimeMLP(3, (8,), context=2), 3, context=2), 0.4).to(F64)
    plain = CNF(PlainTimeMLP(3, (8,), context=2), 3, context=2).to(F64)
    plain.load_state_dict(fused.state_dict())
    for cnf in (fused, plain):
        cnf.rtol = cnf.atol = 1e-10
    x, c = torch.randn(4, 3, dtype=F64), torch.randn(4, 2, dtype=F64)
    z1, l1 = fused.eval()(x, c)
    z2, l2 = plain.eval()(x, c)
    assert torch.allclose(z1, z2, atol=1e-9) and torch.allclose(l1, l2, atol=1e-9)


def test_ffjord_dynamics_option() -> None:
    mlp = ff.flows.FFJORD(2, hidden=(8,), dynamics="mlp").bijection.bijections[0].net
    cs = ff.flows.FFJORD(2, hidden=(8,)).bijection.bijections[0].net
    assert type(mlp) is ff.nn.TimeMLP and type(cs) is ff.nn.ODENet
    with pytest.raises(ValueError, match=r"dynamics .*'concatsquash' or 'mlp', got 'x'"):
        ff.flows.FFJORD(2, dynamics="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="TimeMLP: expected activation"):
        ff.nn.TimeMLP(2, activation="relu")


def test_flow_matching_runs_default_to_the_mlp_and_old_runs_keep_concat_squash() -> None:
    from flowforge.runs import ModelSpec, build_flow
    from flowforge.runs.recipe import idle_option
    from flowforge.train.config import TrainConfig
    from flowforge.train.model import spec_for

    ds = type(
        "Toy",
        (),
        {"kind": "toy", "dim": 2, "event_shape": (2,), "standardizer": None, "context_dim": 0},
    )()
    fm = spec_for(TrainConfig(flow="ffjord", objective="flow-matching"), ds)
    ml = spec_for(TrainConfig(flow="ffjord"), ds)
    given = spec_for(
        TrainConfig(
            flow="ffjord", objective="flow-matching", flow_options={"dynamics": "concatsquash"}
        ),
        ds,
    )
    assert fm.kwargs["dynamics"] == "mlp" and ml.kwargs["dynamics"] == "concatsquash"
    assert given.kwargs["dynamics"] == "concatsquash"
    # flow matching's MLP: GELU and one time pair, stored; ML and a concat-squash FM run: not
    assert (fm.kwargs["activation"], fm.kwargs["freqs"]) == ("gelu", 1)
    assert "activation" not in ml.kwargs and "freqs" not in ml.kwargs
    assert "activation" not in given.kwargs and "freqs" not in given.kwargs
    tanh = spec_for(
        TrainConfig(flow="ffjord", objective="flow-matching", flow_options={"freqs": 0}), ds
    )
    assert (tanh.kwargs["activation"], tanh.kwargs["freqs"]) == ("gelu", 0)
    ot = spec_for(TrainConfig(flow="ffjord", objective="flow-matching", ot=True), ds)
    assert ot.kwargs["dynamics"] == "mlp"  # with OT pairs: tanh on 1 - t, stored
    assert ot.kwargs["reverse_time"] is True and "reverse_time" not in fm.kwargs
    assert "activation" not in ot.kwargs and "freqs" not in ot.kwargs
    net = next(m for m in build_flow(ot).modules() if isinstance(m, CNF)).net
    assert type(net) is ff.nn.TimeMLP and net.reverse_time and net.activation == "tanh"
    # an OT run saved before (dynamics stored, reverse_time not) rebuilds on t, as it trained
    old_ot = {"preset": "ffjord", "kwargs": {"features": 2, "hidden": [8], "dynamics": "mlp"}}
    spec = ModelSpec.from_dict({**old_ot, "kind": "toy", "data_shape": [2]})
    net = next(m for m in build_flow(spec).modules() if isinstance(m, CNF)).net
    assert type(net) is ff.nn.TimeMLP and not net.reverse_time and net.freqs == 0
    assert ModelSpec.from_dict(fm.to_dict()).kwargs == fm.kwargs
    net = next(m for m in build_flow(fm).modules() if isinstance(m, CNF)).net
    assert type(net) is ff.nn.TimeMLP and (net.activation, net.freqs) == ("gelu", 1)
    old = {"preset": "ffjord", "kwargs": {"features": 2, "hidden": [8]}, "kind": "toy"}
    spec = ModelSpec.from_dict({**old, "data_shape": [2]})
    net = next(m for m in build_flow(spec).modules() if isinstance(m, CNF)).net
    assert spec.kwargs["dynamics"] == "concatsquash" and type(net) is ff.nn.ODENet
    assert "gate_bias" in (idle_option("ffjord", {"dynamics": "mlp", "gate_bias": 1.0}) or "")
    assert idle_option("ffjord", {"dynamics": "mlp", "freqs": 2}) is None  # the MLP's too
    assert idle_option("ffjord", {"gate_bias": 1.0}) is None


@pytest.mark.parametrize("pot", [True, False], ids=["pot", "scipy"])
def test_ot_pairing_is_an_optimal_permutation(pot: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if pot:
        pytest.importorskip("ot")
    else:
        monkeypatch.setitem(sys.modules, "ot", None)  # import ot -> ImportError: scipy
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(64, 2, generator=g) * 3, torch.randn(64, 2, generator=g)
    p = _ot_pairing(x, z)
    assert sorted(p.tolist()) == list(range(64))
    cost = torch.cdist(x, z).square().double().numpy()
    rows, cols = linear_sum_assignment(cost)
    assert cost[range(64), p.numpy()].sum() == pytest.approx(cost[rows, cols].sum(), rel=1e-9)
    assert not torch.equal(p, torch.arange(64))  # the pairing did move something
