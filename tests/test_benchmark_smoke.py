"""The speed benchmark's machinery runs, so it cannot rot (flowforge always; peers if present)."""

from __future__ import annotations

import importlib.util
import math
import re
import statistics
from collections.abc import Iterator
from types import ModuleType

import pytest
import torch

from repo_scripts import load_script


def _load() -> ModuleType:
    return load_script("benchmarks/speed.py", "flowforge_bench_speed")


@pytest.fixture(scope="module")
def speed() -> Iterator[ModuleType]:
    module = _load()
    glow = dict(module.GLOW)
    yield module
    module.GLOW.update(glow)


@pytest.fixture
def tiny_glow(speed: ModuleType) -> Iterator[None]:
    """``speed.GLOW`` (which ``main`` sets from its arguments) at the tiny size, restored after."""
    glow = dict(speed.GLOW)
    speed.GLOW.update(levels=2, steps=2, hidden=16)
    yield
    speed.GLOW.update(glow)


# A small Glow: 2 levels x 2 steps, conv width 16, on (1, 8, 8); every measurement one call.
TINY_GLOW = ["--glow-steps", "2", "--glow-hidden", "16", "--glow-batch", "16"]
TINY_GLOW += ["--glow-train-batch", "4", "--glow-min-time", "0"]
TINY = ["--dims", "4", "--repeats", "1", "--batch", "32", "--train-batch", "16", "--threads", "1"]
TINY += TINY_GLOW


def test_flowforge_alone(
    speed: ModuleType, tiny_glow: None, capsys: pytest.CaptureFixture[str]
) -> None:
    threads = torch.get_num_threads()
    try:
        res = speed.main([*TINY, "--libs", "flowforge", "--flops"])
    finally:
        torch.set_num_threads(threads)
    assert res is not None
    for flow in speed.FLOWS:
        key = f"{flow}/4"
        assert res.params[key]["flowforge"] > 0
        for op in ("train", "log_prob", "sample"):
            assert res.times[key][op]["flowforge"] > 0
        assert res.flops[key]["gflop"] == pytest.approx(speed.log_prob_flops(flow, 4, 32) / 1e9)
    assert res.params["Glow/1x8x8"]["flowforge"] > 0
    assert res.times["Glow/1x8x8"]["train"]["flowforge"] > 0
    out = capsys.readouterr().out
    assert "| MAF | 4 | train |" in out
    assert "| Glow | 1x8x8 | train |" in out
    assert len(res.samples["MAF/4"]["train"]["flowforge"]) == 1


def test_paired_ratio_cancels_drift(speed: ModuleType) -> None:
    # The machine slows down 4x during the run; the peer is 1.5x slower in every repetition.
    ours = [1.0, 1.0, 4.0, 4.0, 4.0]
    peer = [1.5, 1.5, 6.0, 6.0, 6.0]
    assert speed.paired_ratio(peer, ours) == pytest.approx(1.5)
    # A ratio of medians would be 6 / 4 here only by luck; with the drift split differently
    # it is not: ours fast in 3 of 5 repetitions, the peer in 2.
    ours2, peer2 = [1.0, 1.0, 1.0, 4.0, 4.0], [1.5, 1.5, 6.0, 6.0, 6.0]
    assert speed.paired_ratio(peer2, ours2) == pytest.approx(1.5)
    assert statistics.median(peer2) / statistics.median(ours2) == pytest.approx(6.0)
    with pytest.raises(ValueError):
        speed.paired_ratio([1.0], [1.0, 2.0])


@pytest.mark.slow  # a subprocess that imports torch
def test_memory_child_runs(speed: ModuleType) -> None:
    mib = speed.memory_of(
        "flowforge", "MAF", 4, "log_prob", {"train": 8, "log_prob": 64, "sample": 8}
    )
    assert not math.isnan(mib) and mib >= 0


@pytest.mark.parametrize("lib", ["zuko", "nflows", "normflows"])
def test_peer_builds_same_architecture(speed: ModuleType, lib: str) -> None:
    pytest.importorskip(lib)
    for flow in ("MAF", "NSF", "RealNVP"):
        ours = speed.build("flowforge", flow, 6)
        peer = speed.build(lib, flow, 6)
        assert ours is not None and peer is not None
        assert speed.n_params(peer.module) == speed.n_params(ours.module)
        x = torch.randn(5, 6)
        assert peer.log_prob(x).shape == (5,)
        assert peer.sample(3).shape == (3, 6)


def test_glow_in_every_library(speed: ModuleType, tiny_glow: None) -> None:
    threads = torch.get_num_threads()
    try:
        res = speed.main([*TINY, "--flows", "Glow"])
    finally:
        torch.set_num_threads(threads)
    assert res is not None
    key = "Glow/1x8x8"
    ours = res.params[key]["flowforge"]
    assert ours > 0
    for lib, n in res.params[key].items():
        assert abs(n - ours) / ours < 0.03, (lib, n, ours)  # matched within 3%
        for op in ("train", "log_prob", "sample"):
            assert res.times[key][op][lib] > 0
    assert "zuko" not in res.params[key]  # zuko has no image flows (or is not installed)


def test_zuko_glow_noted(speed: ModuleType, tiny_glow: None) -> None:
    """zuko has no image flows: its Glow column is n/a with the reason (needs the bench extra)."""
    pytest.importorskip("zuko", reason="zuko is in the bench extra, not the test extra")
    threads = torch.get_num_threads()
    try:
        res = speed.main([*TINY, "--flows", "Glow", "--libs", "flowforge", "zuko"])
    finally:
        torch.set_num_threads(threads)
    assert res is not None
    assert "zuko" not in res.params["Glow/1x8x8"]
    assert "image flows" in res.notes["zuko Glow"]


@pytest.mark.parametrize("lib", ["nflows", "normflows"])
def test_peer_glow_same_architecture(speed: ModuleType, tiny_glow: None, lib: str) -> None:
    pytest.importorskip(lib)
    ours = speed.build("flowforge", "Glow", (1, 8, 8))
    peer = speed.build(lib, "Glow", (1, 8, 8))
    assert ours is not None and peer is not None
    n_ours, n_peer = speed.n_params(ours.module), speed.n_params(peer.module)
    assert abs(n_peer - n_ours) / n_ours < 0.03

    # The same layers: conv weights of the same shapes, in the same number.
    def convs(m: torch.nn.Module) -> list[tuple[int, ...]]:
        return sorted(tuple(c.weight.shape) for c in m.modules() if isinstance(c, torch.nn.Conv2d))

    assert convs(peer.module) == convs(ours.module)
    x = torch.randn(6, 1, 8, 8)
    for model in (ours, peer):
        ops = speed.make_ops(model, (1, 8, 8), {"train": 4, "log_prob": 6, "sample": 3})
        assert torch.isfinite(ops["train"]())
        assert model.log_prob(x).shape == (6,)
        assert ops["sample"]().shape == (3, 1, 8, 8)


def test_ffjord_against_zuko_on_two_dimensions(
    speed: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    zuko = importlib.util.find_spec("zuko") is not None
    libs = ["flowforge", "zuko"] if zuko else ["flowforge"]
    threads = torch.get_num_threads()
    try:
        res = speed.main([*TINY, "--flows", "FFJORD", "--libs", *libs, "--no-sample"])
    finally:
        torch.set_num_threads(threads)
    assert res is not None
    key = "FFJORD/2"  # D = 2 whatever --dims says
    ours = res.params[key]["flowforge"]
    assert ours > 0
    note = res.notes["NFE FFJORD"]
    for lib in libs:
        assert abs(res.params[key][lib] - ours) / ours < 0.03  # the same dynamics size
        for op in ("train", "log_prob"):
            assert res.times[key][op][lib] > 0
            nfe = re.search(rf"{lib} {op} (\d+)", note)
            assert nfe is not None and int(nfe.group(1)) >= 6  # at least one dopri5 step
    out = capsys.readouterr().out
    assert "| FFJORD | 2 | train |" in out and "FFJORD: D=2" in out
    assert "smoke run" not in out  # only --quick says so


def test_quick_mode_says_it_is_a_smoke_run(
    speed: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    threads = torch.get_num_threads()
    try:
        args = ["--quick", "--flows", "NICE", "--libs", "flowforge", "--repeats", "1"]
        res = speed.main([*args, "--batch", "32", "--train-batch", "16", "--ops", "log_prob"])
    finally:
        torch.set_num_threads(threads)
    assert res is not None and res.meta["quick"] is True
    captured = capsys.readouterr()
    assert "smoke run" in captured.out and "not a comparison" in captured.out
    assert "not a comparison" in captured.err  # also where the progress lines go
