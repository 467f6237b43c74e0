"""A checkpoint written before validation ran on the engine's ``KeepBest`` resumes exactly.

``tests/fixtures/old_runs/train_resume`` is a run stopped at step 30 of a noisy validation
(best at step 26, two bad evaluations, patience 8, a moving average), written at commit 6d90043;
``train_resume_expected.json`` holds what that commit's ``flowforge train --resume ... --steps
60`` wrote next (every metrics record after step 30, the results, the final log-densities).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import flowforge as ff
from flowforge.cli import main
from flowforge.runs.checkpoint import load_checkpoint

OLD = Path(__file__).parent / "fixtures" / "old_runs"


def test_an_old_checkpoint_holds_the_validation_keys_under_their_names() -> None:
    state = load_checkpoint(OLD / "train_resume" / "checkpoint.safetensors")
    counters = state["counters"]
    assert (counters["step"], counters["best_step"], counters["bad_evals"]) == (30, 26, 2)
    assert state["best_state"] is not None


def test_an_old_checkpoint_resumes_identically(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(OLD / "train_resume", run)
    expected = json.loads((OLD / "train_resume_expected.json").read_text())
    torch.set_num_threads(1)
    assert main(["train", "--resume", str(run), *expected["resume"], "--quiet", "--no-plots"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    after = [{k: v for k, v in r.items() if k != "seconds"} for r in records if r["step"] > 30]
    want = expected["metrics_after_step_30"]
    assert [r["step"] for r in after] == [r["step"] for r in want]
    for got, rec in zip(after, want, strict=True):
        assert got.keys() == rec.keys()
        for key, value in rec.items():
            assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (rec["step"], key)
    results = json.loads((run / "results.json").read_text())
    assert (results["best_step"], results["stop_reason"]) == (48, "completed")
    assert results["best_val_nll"] == pytest.approx(expected["results"]["best_val_nll"], rel=1e-6)
    flow = ff.load(run)
    with torch.no_grad():
        lp = flow.log_prob(torch.tensor(expected["points"])).tolist()
    assert lp == pytest.approx(expected["log_prob"], rel=1e-6, abs=1e-6)


def test_an_old_checkpoint_keeps_its_patience_and_best_weights(tmp_path: Path) -> None:
    """Resumed with patience 3, the checkpoint's two bad evaluations and one more stop the run
    at step 32, which ends with the checkpoint's best weights (step 26): as the old code did."""
    run = tmp_path / "run"
    shutil.copytree(OLD / "train_resume", run)
    expected = json.loads((OLD / "train_resume_expected.json").read_text())["patience_3"]
    torch.set_num_threads(1)
    assert main(["train", "--resume", str(run), *expected["resume"], "--quiet", "--no-plots"]) == 0
    results = json.loads((run / "results.json").read_text())
    want = expected["results"]
    assert (results["steps"], results["stop_reason"], results["best_step"]) == (
        32,
        "early stopping",
        26,
    )
    assert results["best_val_nll"] == want["best_val_nll"]  # read back from the checkpoint
    assert results["test"]["nll"] == pytest.approx(want["test"]["nll"], rel=1e-6)
    state = load_checkpoint(run / "checkpoint.safetensors")["counters"]
    assert (state["best_step"], state["bad_evals"], state["stopped_early"]) == (26, 3, True)
