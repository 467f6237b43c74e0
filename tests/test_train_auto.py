"""Issue 11: ``flowforge train --flow auto`` (a search by validation NLL within a time budget);
``cli.main`` in this process (:func:`cli_util.run_cli`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cli_util import assert_bad_input, assert_ok, run_cli
from flowforge.train.auto import candidates
from flowforge.train.config import TrainConfig


def test_candidates_respect_the_users_size() -> None:
    wide = candidates(TrainConfig())
    assert [p for p, _ in wide[:4]] == ["nsf", "realnvp", "maf", "nice"] and len(wide) > 4
    fixed = candidates(TrainConfig.from_layers({"hidden": (8,)}))
    assert all(opts == {} for _, opts in fixed)


def _table(root: Path) -> None:
    x = np.random.default_rng(2).normal(size=(80, 2)) * [1.0, 3.0]
    (root / "t.csv").write_text("a,b\n" + "".join(f"{a:.5f},{b:.5f}\n" for a, b in x))


ARGS = ["--data", "t.csv", "--flow", "auto", "--steps", "15", "--quiet", "--no-plots"]


def test_auto_keeps_the_trial_of_the_best_validation_nll(tmp_path: Path) -> None:
    _table(tmp_path)
    proc = run_cli("train", *ARGS, "--time-budget", "600", "--out", "r", cwd=tmp_path)
    assert_ok(proc)
    assert "val NLL" in proc.stdout
    table = json.loads((tmp_path / "r" / "auto.json").read_text())
    done = [t for t in table["trials"] if t["val_nll"] is not None]
    assert len(done) == len(table["trials"]) == len(candidates(TrainConfig()))
    assert len({t["val_nll"] for t in done}) > 1
    kept = [t for t in table["trials"] if t.get("kept")]
    assert len(kept) == 1 and kept[0]["val_nll"] == min(t["val_nll"] for t in done)
    record = json.loads((tmp_path / "r" / "config.json").read_text())
    assert record["config"]["flow"] == kept[0]["flow"] and record["auto"] == table
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["best_val_nll"] == kept[0]["val_nll"]
    ev = run_cli("eval", "r", "--json", cwd=tmp_path)
    assert_ok(ev)
    assert json.loads(ev.stdout)["nll"] == results["test"]["nll"]


def test_auto_stops_starting_trials_at_the_budget(tmp_path: Path) -> None:
    _table(tmp_path)
    proc = run_cli("train", *ARGS, "--time-budget", "0.001", "--out", "r", cwd=tmp_path)
    assert_ok(proc)
    table = json.loads((tmp_path / "r" / "auto.json").read_text())
    status = [t["status"] for t in table["trials"]]
    assert status[0] != "skipped (time budget)"  # the first trial always runs
    assert status[1:] == ["skipped (time budget)"] * (len(status) - 1)
    assert "skipped (time budget)" in proc.stdout


def test_auto_budget_must_be_positive(tmp_path: Path) -> None:
    proc = run_cli("train", "--flow", "auto", "--time-budget", "0", "--out", "r", cwd=tmp_path)
    assert_bad_input(proc, "time_budget must be positive")


def test_auto_refuses_a_multi_process_launch(tmp_path: Path, monkeypatch) -> None:
    from flowforge import cli

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--flow", "auto", "--out", "r"]) == 2
    assert not (tmp_path / "r").exists()


def test_auto_draws_the_kept_runs_plots(tmp_path: Path) -> None:
    """Issue 22: an auto run has the plots a run of its preset has (drawn once, for the kept
    trial; the trials draw none) and records that it drew them."""
    _table(tmp_path)
    args = [a for a in ARGS if a != "--no-plots"]
    proc = run_cli("train", *args, "--time-budget", "0.001", "--out", "r", cwd=tmp_path)
    assert_ok(proc)
    run = tmp_path / "r"
    assert {p.name for p in run.glob("*.png")} == {"loss.png", "density.png"}
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in run.glob("*.png"))
    assert not list((run / "trials").rglob("*.png"))
    assert json.loads((run / "config.json").read_text())["config"]["plots"] is True
