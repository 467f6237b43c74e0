"""The vector presets' conditioner options: activation, dropout, residual blocks, permutation.

Each option on each preset: a round trip and the log-determinant against the autograd
Jacobian (float64, random parameters), dropout on in training only, the autoregressive
property of (residual) MADEs in random orders, random orders that survive a save and load,
the fused kernels left out for any network they do not implement, and the command line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import flowforge as ff
from cli_util import TINY, assert_bad_input, assert_ok, run_cli
from flowforge.runs.weights import load_weights, save_weights
from registry import randomize

D, C = 4, 2
FLOWS: dict[str, tuple[type[ff.Flow], dict[str, Any]]] = {
    "nice": (ff.flows.NICE, {}),
    "realnvp": (ff.flows.RealNVP, {}),
    "maf": (ff.flows.MAF, {}),
    "iaf": (ff.flows.IAF, {}),
    "nsf": (ff.flows.NSF, {"bins": 4}),
    "nsf-coupling": (ff.flows.NSF, {"bins": 4, "coupling": True}),
}
OPTIONS: dict[str, dict[str, Any]] = {
    "tanh": {"activation": "tanh"},
    "leaky_relu": {"activation": "leaky_relu"},
    "dropout": {"dropout": 0.3},
    "residual": {"residual_blocks": 2},
    "random": {"permutation": "random"},
    "all": {"activation": "gelu", "dropout": 0.1, "residual_blocks": 1, "permutation": "random"},
}


def make(name: str, features: int = D, context: int = C, **options: Any) -> ff.Flow:
    """A small flow with random non-zero parameters, float64, in eval mode."""
    cls, own = FLOWS[name]
    flow = cls(features=features, context=context, transforms=3, hidden=(8, 8), **own, **options)
    return randomize(flow).double().eval()  # type: ignore[return-value]


def data(n: int = 5, features: int = D, context: int = C) -> tuple[Tensor, Tensor]:
    return torch.randn(n, features, dtype=torch.float64), torch.randn(
        n, context, dtype=torch.float64
    )


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("name", FLOWS)
def test_round_trip_and_log_det_match_the_jacobian(name: str, option: str) -> None:
    torch.manual_seed(0)
    flow = make(name, **OPTIONS[option])
    assert {k: flow.hparams[k] for k in OPTIONS[option]} == OPTIONS[option]
    x, c = data()
    b = flow.bijection
    z, ladj = b(x, c)
    x_back, ladj_inv = b.inverse(z, c)
    assert torch.allclose(x_back, x, atol=1e-9) and torch.allclose(ladj_inv, -ladj, atol=1e-9)
    for i in range(x.shape[0]):
        ci = c[i : i + 1]
        jac = torch.autograd.functional.jacobian(lambda v, ci=ci: b(v[None], ci)[0][0], x[i])
        assert torch.allclose(torch.linalg.slogdet(jac)[1], ladj[i], atol=1e-8)


@pytest.mark.parametrize("name", FLOWS)
def test_options_are_hparams_that_rebuild_the_flow(name: str) -> None:
    flow = make(name, **OPTIONS["all"])
    saved = json.loads(json.dumps(flow.hparams))
    rebuilt = type(flow)(**saved)
    assert rebuilt.hparams == flow.hparams
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in flow.state_dict().items()
    }


@pytest.mark.parametrize("name", FLOWS)
def test_a_config_without_the_options_builds_todays_flow(name: str) -> None:
    """An old run's hparams (no option keys) build the default flow: same state, same numbers."""
    torch.manual_seed(3)
    flow = make(name)
    old = {k: v for k, v in flow.hparams.items() if k not in OPTIONS["all"]}
    rebuilt = type(flow)(**old).double().eval()
    rebuilt.load_state_dict(flow.state_dict())  # strict: the same keys
    x, c = data()
    assert torch.equal(rebuilt.log_prob(x, c), flow.log_prob(x, c))
    assert not any(k.endswith("degrees") for k in flow.state_dict())


@pytest.mark.parametrize("name", FLOWS)
def test_dropout_is_active_in_training_only(name: str) -> None:
    torch.manual_seed(1)
    flow = make(name, dropout=0.5)
    x, c = data(8)
    flow.train()
    assert not torch.allclose(flow.log_prob(x, c), flow.log_prob(x, c))
    with torch.no_grad():
        assert not torch.allclose(flow.log_prob(x, c), flow.log_prob(x, c))
    flow.eval()
    lp = flow.log_prob(x, c)
    assert torch.equal(lp, flow.log_prob(x, c))
    # Off in eval means the very numbers of the same weights without dropout.
    plain = make(name, dropout=0.0)
    plain.load_state_dict(flow.state_dict())
    assert torch.allclose(lp, plain.log_prob(x, c), atol=1e-12)
    with torch.no_grad():
        assert torch.allclose(lp, flow.log_prob(x, c), atol=1e-12)
    with ff.functional.plain_modules():  # the modules themselves, not a fused kernel
        assert torch.allclose(lp, flow.log_prob(x, c), atol=1e-12)


def _made_jacobian(made: ff.nn.MADE, x: Tensor, c: Tensor | None) -> Tensor:
    """d output / d input, ``(D, P, D)``."""
    out = torch.autograd.functional.jacobian(lambda v: made(v[None], c)[0], x)
    return out.view(made.features, made.params_per_dim, made.features)


@pytest.mark.parametrize("context", [0, C])
@pytest.mark.parametrize(
    "build",
    [
        lambda o, c: ff.nn.MADE(
            6, 2, (12, 12), context=c, order=o, activation="tanh", zero_last=False
        ),
        lambda o, c: ff.nn.ResidualMADE(
            6, 2, (12,), 1, context=c, order=o, activation="tanh", zero_last=False
        ),
        lambda o, c: ff.nn.ResidualMADE(
            6, 3, (12, 12), 3, context=c, order=o, activation="tanh", zero_last=False
        ),
    ],
    ids=["made", "residual-1x1", "residual-3x2"],
)
def test_made_outputs_depend_exactly_on_lower_degrees(build: Any, context: int) -> None:
    torch.manual_seed(2)
    order = torch.randperm(6) + 1
    made = build(order, context).double()
    randomize(made)
    x = torch.randn(6, dtype=torch.float64)
    c = torch.randn(1, context, dtype=torch.float64) if context else None
    dep = _made_jacobian(made, x, c).abs().amax(1) > 0  # (D out, D in)
    deg = made.degrees
    assert torch.equal(dep, deg[:, None] > deg[None, :])  # no more, and no less
    if context:
        jc = torch.autograd.functional.jacobian(lambda v: made(x[None], v[None])[0], c[0])
        assert bool((jc.abs().view(6, -1).amax(1) > 0).all())


@pytest.mark.parametrize("name", ["maf", "iaf", "nsf"])
def test_autoregressive_layers_are_triangular_in_their_random_order(name: str) -> None:
    torch.manual_seed(4)
    flow = make(
        name, features=6, context=0, activation="tanh", residual_blocks=2, permutation="random"
    )
    flow.bijection.double()
    orders = []
    x = torch.randn(6, dtype=torch.float64)
    for layer in flow.bijection.modules():
        if isinstance(layer, ff.transforms.MaskedAutoregressive):
            deg = layer.made.degrees
            jac = torch.autograd.functional.jacobian(lambda v, m=layer: m(v[None])[0][0], x)
            assert torch.equal(jac != 0, deg[:, None] >= deg[None, :])  # z_i sees x_j, j <= i
            orders.append(deg.tolist())
    assert len(orders) == 3 and orders != [orders[0]] * 3


def _orders(flow: ff.Flow) -> list[list[int]]:
    """The random permutations and MADE orders of a flow."""
    out = []
    for name, buf in flow.state_dict().items():
        if name.endswith((".perm", ".degrees")):
            out.append(buf.tolist())
    return out


@pytest.mark.parametrize("name", FLOWS)
def test_random_orders_survive_state_dict_and_run_files(name: str, tmp_path: Path) -> None:
    torch.manual_seed(5)
    saved = make(name, features=6, permutation="random")
    torch.manual_seed(6)
    other = make(name, features=6, permutation="random")
    assert _orders(saved) and _orders(saved) != _orders(other)
    x, c = data(7, features=6)
    other.log_prob(x, c).sum().backward()  # fills caches of the fused kernels, if any
    with torch.no_grad():
        other.log_prob(x, c), other.sample(2, c)
    other.load_state_dict(saved.state_dict())
    assert _orders(other) == _orders(saved)
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            assert torch.allclose(other.log_prob(x, c), saved.log_prob(x, c), atol=1e-10)
            torch.manual_seed(7)
            a = other.sample(3, c)
            torch.manual_seed(7)
            assert torch.allclose(a, saved.sample(3, c), atol=1e-8)
    # A run's files: JSON hparams and safetensors weights, rebuilt under another seed.
    save_weights(tmp_path / "model.safetensors", saved)
    torch.manual_seed(8)
    rebuilt = type(saved)(**json.loads(json.dumps(saved.hparams))).double().eval()
    load_weights(tmp_path / "model.safetensors", rebuilt)
    assert torch.allclose(rebuilt.log_prob(x, c), saved.log_prob(x, c), atol=1e-10)


def test_a_loaded_order_must_be_a_permutation() -> None:
    made = ff.nn.MADE(3, 2, (8,), save_order=True)
    state = made.state_dict()
    state["degrees"] = torch.tensor([1, 1, 2])
    with pytest.raises(RuntimeError, match=r"degrees: order must be a permutation of 1\.\.3"):
        made.load_state_dict(state)


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("activation", "nope", "activation in ['elu', 'gelu', 'leaky_relu', 'relu', 'silu'"),
        ("activation", None, "activation in"),
        ("dropout", 1.5, "dropout in [0, 1)"),
        ("dropout", 1.0, "dropout in [0, 1)"),
        ("dropout", -0.1, "dropout in [0, 1)"),
        ("dropout", True, "dropout in [0, 1)"),
        ("residual_blocks", -1, "residual_blocks >= 0"),
        ("residual_blocks", 1.0, "residual_blocks >= 0"),
        ("permutation", "shuffle", "permutation in ['reverse', 'random']"),
    ],
)
@pytest.mark.parametrize("name", FLOWS)
def test_bad_options_are_value_errors_naming_the_valid_ones(
    name: str, option: str, value: Any, expected: str
) -> None:
    cls, own = FLOWS[name]
    with pytest.raises(ValueError, match=f"^{cls.__name__}: expected {re.escape(expected)}"):
        cls(features=D, **own, **{option: value})


@pytest.mark.parametrize("name", FLOWS)
def test_residual_blocks_need_one_hidden_width(name: str) -> None:
    cls, own = FLOWS[name]
    with pytest.raises(ValueError, match=r"residual_blocks needs hidden layers of one width"):
        cls(features=D, hidden=(8, 4), residual_blocks=1, **own)
    assert cls(features=D, hidden=(8,), residual_blocks=3, **own).hparams["residual_blocks"] == 3


def test_options_are_documented_once() -> None:
    for name, (cls, _) in FLOWS.items():
        doc = cls.__doc__ or ""
        for option in ("activation", "dropout", "residual_blocks", "permutation"):
            assert f"    {option}: " in doc, (name, option)


@pytest.mark.slow
def test_cli_trains_and_evaluates_a_run_with_every_option(tmp_path: Path) -> None:
    options = {"activation": "tanh", "dropout": 0.1, "residual_blocks": 1, "permutation": "random"}
    args = ["--data", "moons", "--flow", "maf", *TINY, "--steps", "5"]
    proc = run_cli(
        "train", *args, "--flow-options", json.dumps(options), "--out", "run", cwd=tmp_path
    )
    assert_ok(proc)
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert {k: record["model"]["kwargs"][k] for k in options} == options
    assert record["config"]["flow_options"] == options
    ev = run_cli("eval", "run", cwd=tmp_path)
    assert_ok(ev)
    nll = json.loads((tmp_path / "run" / "results.json").read_text())["test"]["nll"]
    assert f"test NLL: {nll:.4f}" in ev.stdout
    flows = []
    for seed in (11, 12):  # a rebuild draws other orders: the saved ones must win
        torch.manual_seed(seed)
        flows.append(ff.load(tmp_path / "run"))
    assert _orders(flows[0]) == _orders(flows[1])
    x = torch.randn(9, 2)
    assert torch.equal(flows[0].log_prob(x), flows[1].log_prob(x))


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        ('{"activation": "nope"}', ["activation", "'nope'", "relu"]),
        ('{"dropout": 1.5}', ["dropout in [0, 1)", "1.5"]),
    ],
)
@pytest.mark.slow
def test_cli_refuses_bad_options_in_one_line(
    options: str, fragments: list[str], tmp_path: Path
) -> None:
    proc = run_cli(
        "train", "--data", "moons", "--flow", "maf", "--quiet", "--steps", "1",
        "--flow-options", options, "--out", "run", cwd=tmp_path,
    )  # fmt: skip
    assert_bad_input(proc, *fragments)
    assert not (tmp_path / "run").exists()


def test_residual_mlp_is_the_written_out_residual_network() -> None:
    """A reference from the flat layers: input layer, h + W2 act(W1 act(h)) twice, output."""
    torch.manual_seed(9)
    net = randomize(ff.nn.ResidualMLP(3, 4, (6, 6), 2, "elu")).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    (w0, b0), *blocks, (wo, bo) = net.layers()
    act = torch.nn.functional.elu
    h = x @ w0.T + b0
    for (w1, b1), (w2, b2) in zip(blocks[::2], blocks[1::2]):
        h = h + act(act(h) @ w1.T + b1) @ w2.T + b2
    assert torch.allclose(net(x), act(h) @ wo.T + bo, atol=1e-12)


@pytest.mark.parametrize("name", ["realnvp", "maf", "iaf", "nsf", "nsf-coupling"])
def test_residual_flows_start_as_the_identity(name: str) -> None:
    """The output layers are zero-initialised, the rest of the network is not."""
    cls, own = FLOWS[name]
    flow = cls(features=D, context=C, hidden=(8,), residual_blocks=2, **own).double()
    x, c = data()
    z, ladj = flow.bijection(x, c)
    assert torch.allclose(z, x, atol=1e-12) and torch.allclose(ladj, torch.zeros_like(ladj))
    assert any(p.abs().sum() > 0 for p in flow.parameters())


@pytest.mark.parametrize("flow", ["nice", "realnvp", "maf", "iaf", "nsf"])
def test_a_toml_flow_options_table_reaches_the_preset(flow: str, tmp_path: Path) -> None:
    from flowforge.data import load_dataset
    from flowforge.runs.recipe import build_flow
    from flowforge.train.config import ConfigError, TrainConfig, read_toml
    from flowforge.train.model import spec_for

    toml = tmp_path / "c.toml"
    toml.write_text(
        f'flow = "{flow}"\n[flow_options]\nactivation = "elu"\ndropout = 0.25\n'
        'residual_blocks = 2\npermutation = "random"\n'
    )
    ds = load_dataset("moons", n_val=10, n_test=10)
    spec = spec_for(TrainConfig.from_layers(read_toml(toml)), ds)
    built = build_flow(spec)
    assert isinstance(built, ff.flows.PRESETS[flow])
    assert {k: built.hparams[k] for k in OPTIONS["all"]} == {
        "activation": "elu",
        "dropout": 0.25,
        "residual_blocks": 2,
        "permutation": "random",
    }
    toml.write_text(f'flow = "{flow}"\n[flow_options]\nactivation = "nope"\n')
    with pytest.raises(ConfigError, match=r"cannot build flow .*expected activation in \["):
        build_flow(spec_for(TrainConfig.from_layers(read_toml(toml)), ds))
