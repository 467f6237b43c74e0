"""The CNF race (benchmarks/cnf_race.py) runs at a tiny size, so it cannot rot."""

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
    assert out.count("FINAL ours:") == 2 and "EQUAL SECONDS" not in out  # no zuko, no pair


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
    c = race.Checkpoint
    ours = [c(50, 40.0, 30.0, 3.5), c(100, 90.0, 30.0, 3.2)]
    peer = [c(50, 80.0, 80.0, 3.9), c(100, 90.0, 80.0, 3.4), c(150, 130.0, 80.0, 3.1)]
    assert race.equal_seconds(ours, peer) == (ours[-1], peer[1])  # 90 s >= 90 s: the first such
    assert race.equal_seconds(ours, peer[:1]) is None  # the peer never trained 90 s
