"""Crash safety as users meet it: SIGKILL and --resume, longer runs, non-finite losses.

The killed run and the refused resume with fewer steps are real processes (``python -m
flowforge``); the other commands run ``cli.main`` in this process (:func:`cli_util.run_cli`).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from cli_util import TINY, assert_bad_input, assert_ok, flowforge, run_cli, start

# Long enough to be killed in the middle, short enough for a test.
RUN = [*TINY, "--steps", "160", "--eval-every", "20", "--seed", "3"]


def _metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _final_test_nll(run: Path) -> float:
    return float(json.loads((run / "results.json").read_text())["test"]["nll"])


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    assert_ok(run_cli("train", *RUN, "--out", "straight", cwd=tmp_path))

    victim = tmp_path / "killed"
    proc = start("train", *RUN, "--out", victim, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait for the checkpoint of step 40
        metrics = victim / "metrics.jsonl"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)  # reap it and close its pipes
    assert proc.returncode == -signal.SIGKILL
    assert not (victim / "results.json").exists()  # it really died mid-training

    resumed = run_cli("train", "--resume", victim, "--quiet", cwd=tmp_path)
    assert_ok(resumed)
    assert "test NLL:" in resumed.stdout
    straight, killed = _metrics(tmp_path / "straight"), _metrics(victim)
    assert [r["step"] for r in killed] == [20 * k for k in range(1, 9)]
    for a, b in zip(straight, killed):
        assert b["val_nll"] == pytest.approx(a["val_nll"], abs=1e-6)
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-6)
    assert _final_test_nll(victim) == pytest.approx(
        _final_test_nll(tmp_path / "straight"), abs=1e-6
    )


def test_resume_extends_a_finished_run_and_refuses_other_changes(tmp_path: Path) -> None:
    assert_ok(
        run_cli("train", *TINY, "--steps", "20", "--eval-every", "10", "--out", "r", cwd=tmp_path)
    )
    proc = run_cli("train", "--resume", "r", "--lr", "0.1", cwd=tmp_path)
    assert_bad_input(proc, "--lr cannot change when resuming", "--steps")
    assert_ok(run_cli("train", "--resume", "r", "--steps", "30", "--quiet", cwd=tmp_path))
    assert [r["step"] for r in _metrics(tmp_path / "r")] == [10, 20, 30]
    assert json.loads((tmp_path / "r" / "config.json").read_text())["total_steps"] == 30
    assert_bad_input(run_cli("train", "--resume", "nowhere", cwd=tmp_path), "no run directory")
    # fewer steps than done: refused, and the records stay as they were (they agree)
    before = {f: (tmp_path / "r" / f).read_bytes() for f in ("config.json", "results.json")}
    proc = flowforge("train", "--resume", "r", "--steps", "15", cwd=tmp_path)  # a real process
    assert_bad_input(proc, "has done 30 steps", "more than 30", "got 15")
    assert {f: (tmp_path / "r" / f).read_bytes() for f in before} == before


def test_non_finite_loss_stops_and_keeps_a_usable_run(tmp_path: Path) -> None:
    args = [*TINY, "--steps", "60", "--eval-every", "20", "--schedule", "constant"]
    proc = run_cli("train", *args, "--lr", "1e30", "--on-nan", "stop", "--out", "r", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "non-finite" in proc.stderr and "training stopped" in proc.stderr
    assert "last good checkpoint (step 0)" in proc.stderr
    assert_ok(run_cli("eval", "r", cwd=tmp_path))  # the run directory is still valid


def test_non_finite_loss_recovers_with_a_lower_rate(tmp_path: Path) -> None:
    args = [*TINY, "--steps", "40", "--eval-every", "20", "--schedule", "constant"]
    args += ["--lr", "1e30", "--nan-lr-factor", "1e-33", "--out", "r"]
    proc = run_cli("train", *args, cwd=tmp_path)
    assert_ok(proc)
    assert "non-finite" in proc.stderr and "lowered the learning rate to 0.001" in proc.stderr
    records = _metrics(tmp_path / "r")
    assert records[-1]["nan_total"] >= 1 and records[-1]["lr"] == pytest.approx(1e-3)
