"""The continuous-flow races (benchmarks/cnf_race.py, fm_race.py, cnf_cli_race.py) run tiny, so they
cannot rot; fm_race's shared evaluator is exact."""

from __future__ import annotations

import itertools
import math
from types import ModuleType
from typing import Any

import pytest
import torch

from flowforge.data.toy import sample_toy
from repo_scripts import load_script

TINY = ["--steps", "2", "--every", "1", "--batch", "16", "--test", "64", "--lr", "1e-2"]


@pytest.fixture(scope="module")
def race() -> ModuleType:
    return load_script("benchmarks/cnf_race.py", "flowforge_bench_cnf_race")


def _check(log: list[Any], steps: int) -> None:
    assert [c.step for c in log] == list(range(1, steps + 1))
    assert all(c.nfe > 0 and math.isfinite(c.nll) for c in log)
    assert all(b.seconds > a.seconds > 0 for a, b in itertools.pairwise(log))
    assert all(b.cpu > a.cpu > 0 for a, b in itertools.pairwise(log))  # CPU seconds counted


def _untrained_nll(race: ModuleType, name: str) -> float:
    test = sample_toy("8gaussians", 64, torch.Generator().manual_seed(10_000))
    threads = torch.get_num_threads()
    try:
        return float(race.build(name, 0)[2](test))
    finally:
        torch.set_num_threads(threads)


def _main(race: ModuleType, argv: list[str]) -> dict[str, list[Any]]:
    threads = torch.get_num_threads()
    try:
        return race.main(argv)
    finally:
        torch.set_num_threads(threads)


def test_ours_trains(race: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    log = _main(race, ["ours:;ours:adjoint=False,rnode=(0.01, 0.01)", *TINY])
    for name in ("ours:", "ours:adjoint=False,rnode=(0.01, 0.01)"):
        _check(log[name], 2)
        # the test NLL moved from the untrained model's: the optimiser stepped the flow
        assert log[name][0].nll != pytest.approx(_untrained_nll(race, "ours:"), abs=1e-6)
    out = capsys.readouterr().out
    assert out.count("FINAL ours:") == 2 and "EQUAL CPU SECONDS" not in out  # no zuko, no pair


def test_against_zuko(race: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("zuko", reason="zuko is in the bench extra, not the test extra")
    log = _main(race, ["zuko;ours:", *TINY])
    _check(log["zuko"], 2)
    _check(log["ours:"], 2)
    assert log["zuko"][0].nll != pytest.approx(_untrained_nll(race, "zuko"), abs=1e-6)
    out = capsys.readouterr().out
    assert "FINAL zuko" in out and "FINAL ours:" in out


def test_seconds_budget_stops_each_model(race: ModuleType) -> None:
    log = _main(race, ["ours:", *TINY, "--steps", "3", "--seconds", "1e-9"])
    assert [c.step for c in log["ours:"]] == [1]  # one step passes any budget; then it stops


def test_bad_model_name(race: ModuleType) -> None:
    with pytest.raises(SystemExit, match="expected a model 'zuko' or 'ours"):
        race.build("nflows", 0)


def test_equal_seconds_gives_the_peer_the_extra_time(race: ModuleType) -> None:
    c = race.Checkpoint  # (step, wall seconds, NFE, NLL, CPU seconds)
    ours = [c(50, 40.0, 30.0, 3.5, 20.0), c(100, 90.0, 30.0, 3.2, 45.0)]
    peer = [c(50, 80.0, 80.0, 3.9, 45.0), c(100, 90.0, 80.0, 3.4, 70.0)]
    peer.append(c(150, 130.0, 80.0, 3.1, 95.0))
    # CPU seconds by default: 45 >= 45, the first such
    assert race.equal_seconds(ours, peer) == (ours[-1], peer[0])
    assert race.equal_seconds(ours, peer, "seconds") == (ours[-1], peer[1])  # wall: 90 >= 90
    assert race.equal_seconds(ours[:1], peer[:1], "seconds") == (ours[0], peer[0])
    assert race.equal_seconds([c(9, 1.0, 1.0, 3.0, 99.0)], peer) is None  # never trained 99 s


@pytest.fixture(scope="module")
def fm() -> ModuleType:
    return load_script("benchmarks/fm_race.py", "flowforge_bench_fm_race")


def test_evaluator_exact_on_a_linear_field(fm: ModuleType) -> None:
    # u(s, x) = a x: z(1) = x e^a and the log-determinant is D a, so the NLL is known exactly
    a, x = 0.5, torch.randn(64, 2, dtype=torch.float64)
    z = x * math.exp(a)
    expected = -(torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) + 2 * a).mean()
    nll = fm.test_nll(lambda s, y: a * y, x, tol=1e-9)
    assert nll == pytest.approx(expected.item(), abs=1e-6)


def test_evaluator_agrees_with_ffjord_log_prob(fm: ModuleType) -> None:
    import flowforge as ff

    torch.manual_seed(1)
    flow = ff.flows.FFJORD(features=2, hidden=(16, 16)).eval()
    with torch.no_grad():  # random non-zero weights, not the identity
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    cnf = flow.bijection.bijections[0]
    x = torch.randn(64, 2) * 2
    with torch.no_grad():
        expected = -flow.log_prob(x).mean().item()
    assert fm.test_nll(lambda s, y: cnf.velocity(s, y), x) == pytest.approx(expected, abs=1e-3)


def _fm_main(fm: ModuleType, models: str) -> dict[str, list[Any]]:
    threads = torch.get_num_threads()
    try:
        return fm.main([models, "--steps", "4", "--every", "2", "--test", "64", "--lr", "1e-2"])
    finally:
        torch.set_num_threads(threads)


def test_fm_race_ours(fm: ModuleType) -> None:
    log = _fm_main(fm, "ours;ours-ot")
    for name in ("ours", "ours-ot"):
        assert [c.step for c in log[name]] == [2, 4]
        assert all(math.isfinite(c.nll) and c.seconds > 0 and c.cpu > 0 for c in log[name])
        assert log[name][0].nll != log[name][1].nll  # the optimiser moved the flow


def test_fm_race_torchcfm(fm: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torchcfm", reason="torchcfm is optional (it pulls a CUDA torch)")
    log = _fm_main(fm, "cfm;cfm-ot;ours")
    for name in ("cfm", "cfm-ot"):
        assert [c.step for c in log[name]] == [2, 4]
        assert all(math.isfinite(c.nll) for c in log[name])
    assert "EQUAL CPU SECONDS" in capsys.readouterr().out


def test_zuko_with_the_cli_settings() -> None:
    pytest.importorskip("zuko", reason="zuko is in the bench extra, not the test extra")
    cli = load_script("benchmarks/cnf_cli_race.py", "flowforge_bench_cnf_cli_race")
    cfg = {"ema_decay": 0.0, "warmup_steps": 0, "optimizer": "adam", "lr": 1e-2}
    cfg |= {"weight_decay": 0.0, "steps": 3, "schedule": "cosine", "min_lr": 0.0}
    cfg |= {"n_val": 32, "batch_size": 16, "clip_grad": 5.0, "eval_every": 2, "restore_best": True}
    threads = torch.get_num_threads()
    try:
        z, records = cli.zuko_like_cli(cfg, 0)
    finally:
        torch.set_num_threads(threads)
    assert [r["step"] for r in records] == [2, 3]
    assert records[1]["seconds"] > records[0]["seconds"] >= records[0]["train_seconds"] > 0
    assert records[1]["end_seconds"] > records[1]["seconds"]
    val = sample_toy("8gaussians", 32, torch.Generator().manual_seed(20_000))
    with torch.no_grad():  # the best validated weights are the ones returned
        nll = -z().log_prob(val).mean().item()
    assert nll == pytest.approx(min(r["val_nll"] for r in records), abs=1e-5)


def test_torchcfm_with_the_cli_settings() -> None:
    pytest.importorskip("torchcfm", reason="torchcfm is optional (it pulls a CUDA torch)")
    cli = load_script("benchmarks/fm_cli_race.py", "flowforge_bench_fm_cli_race")
    cfg = {"ema_decay": 0.0, "warmup_steps": 0, "optimizer": "adam", "lr": 1e-2, "ot": False}
    cfg |= {"weight_decay": 0.0, "steps": 3, "schedule": "cosine", "min_lr": 0.0}
    cfg |= {"n_val": 32, "batch_size": 16, "clip_grad": 5.0, "eval_every": 2}
    cfg |= {"restore_best": True, "fm_sigma": 0.1}
    threads = torch.get_num_threads()
    try:
        net, records = cli.torchcfm_like_cli(cfg, 0)
    finally:
        torch.set_num_threads(threads)
    assert [r["step"] for r in records] == [2, 3]
    assert records[1]["cpu"] > records[0]["cpu"] > records[0]["train_cpu"] > 0
    val = sample_toy("8gaussians", 32, torch.Generator().manual_seed(20_000))
    fm = load_script("benchmarks/fm_race.py", "flowforge_bench_fm_race")
    nll = fm.test_nll(cli.velocity(net), val)  # the best validated weights are the ones returned
    assert nll == pytest.approx(min(r["val_nll"] for r in records), abs=1e-5)
    try:  # OT pairs: torchcfm's exact-OT matcher, a different regression from the same start
        net_ot, _ = cli.torchcfm_like_cli({**cfg, "ot": True}, 0)
    finally:
        torch.set_num_threads(threads)
    assert not torch.equal(net_ot.net[0].weight, net.net[0].weight)
    with pytest.raises(SystemExit, match="without EMA or warmup"):
        cli.torchcfm_like_cli({**cfg, "ema_decay": 0.5}, 0)


def test_fm_race_rows_do_not_depend_on_the_other_models(fm: ModuleType) -> None:
    # Each model draws from its own stream: 'ours' alone and after another model match digit for
    # digit (with one shared stream the companion's draws shifted ours' noise and times).
    threads = torch.get_num_threads()
    try:
        args = ["--steps", "2", "--at", "1", "--test", "16", "--tol", "1e-3", "--lr", "1e-2"]
        alone = fm.main(["ours", *args])["ours"]
        beside = fm.main(["ours:reverse_time=True;ours", *args])
    finally:
        torch.set_num_threads(threads)
    assert [c.step for c in alone] == [1, 2]
    assert [c.nll for c in beside["ours"]] == [c.nll for c in alone]
    assert beside["ours:reverse_time=True"][-1].nll != alone[-1].nll


def test_fm_race_equal_cpu_readings(fm: ModuleType) -> None:
    # At each test every model is also read at the slowest one's CPU seconds: the slowest at
    # the test itself, the others after training on, past the last test if need be. A wider
    # network is slower a step, so the default catches up after more steps than it tested at.
    threads = torch.get_num_threads()
    try:
        args = ["--steps", "3", "--at", "2", "--test", "16", "--tol", "1e-3", "--lr", "1e-3"]
        log = fm.main(["ours;ours:hidden=(256,256,256)", *args])
    finally:
        torch.set_num_threads(threads)
    wide = "ours:hidden=(256,256,256)"
    assert [c.step for c in log[f"{wide}=cpu"]] == [2, 3] and log[f"{wide}=cpu"] == log[wide]
    for mine, slow in zip(log["ours=cpu"], log[wide], strict=True):
        assert mine.cpu >= slow.cpu and mine.step > slow.step
    assert log["ours=cpu"][-1].step > 3  # trained past the end to the wide one's seconds


def test_fm_levers_networks() -> None:
    # The screen's levers: the skip path starts at zero (same velocity as without it, same
    # seed), then is linear in [x, t, x t]; K time pairs widen the first layer by 2 K.
    lv = load_script("benchmarks/fm_levers.py", "flowforge_bench_fm_levers")
    s, x = torch.rand(8), torch.randn(8, 2)
    torch.manual_seed(0)
    plain = lv.Net(act="gelu")
    torch.manual_seed(0)
    skip = lv.Net(act="gelu", skip=1)
    with torch.no_grad():
        assert torch.equal(skip(s, x), plain(s, x))
        skip.skip.weight.normal_()
        w = skip.skip.weight
        extra = x @ w[:, :2].T + s[:, None] * w[:, 2] + (x * s[:, None]) @ w[:, 3:].T
        assert torch.allclose(skip(s, x), plain(s, x) + extra + skip.skip.bias, atol=1e-6)
    assert lv.Net(tfeat=3).layers[0].in_features == 3 + 6


def test_fm_race_ours_is_what_the_command_line_builds(fm: ModuleType) -> None:
    # ours: GELU with a time pair (2 more inputs); ours-ot: --ot's tanh on t. The velocity at
    # the same seed tells the two apart, the parameter count tells the widths apart.
    import argparse

    import flowforge as ff
    from flowforge.flows.ffjord import FLOW_MATCHING, FLOW_MATCHING_OT

    ns = argparse.Namespace(seed=0, sigma=0.1)
    s, x = torch.rand(8), torch.randn(8, 2)
    for name, kw in (("ours", FLOW_MATCHING), ("ours-ot", FLOW_MATCHING_OT)):
        params, _, velocity = fm.build(name, ns)
        torch.manual_seed(0)
        cnf = ff.flows.FFJORD(features=2, hidden=(64, 64, 64), **kw).bijection.bijections[0]
        assert sum(p.numel() for p in params) == cnf.net.flat.numel()
        with torch.no_grad():
            assert torch.equal(velocity(s, x), cnf.velocity(s, x))


def test_fm_race_rebias_starts_as_reverse_time(fm: ModuleType) -> None:
    import argparse

    ns = argparse.Namespace(seed=0, sigma=0.1)
    s, x = torch.rand(16), torch.randn(16, 2)
    rev = fm.build("ours:reverse_time=True", ns)[2](s, x)
    assert torch.allclose(fm.build("ours:rebias=True", ns)[2](s, x), rev, atol=1e-6)
    assert not torch.allclose(fm.build("ours", ns)[2](s, x), rev)


def test_fm_race_outscale_scales_the_initial_velocity(fm: ModuleType) -> None:
    # The last layer is linear: its weights and bias times K scale the initial velocity by K,
    # and K = 0 is the zero output layer (the identity start).
    import argparse

    ns = argparse.Namespace(seed=0, sigma=0.1)
    s, x = torch.rand(16), torch.randn(16, 2)
    with torch.no_grad():
        u = fm.build("ours", ns)[2](s, x)
        assert torch.allclose(fm.build("ours:outscale=2.5", ns)[2](s, x), 2.5 * u, atol=1e-6)
        assert torch.equal(fm.build("ours:outscale=0", ns)[2](s, x), torch.zeros_like(u))
