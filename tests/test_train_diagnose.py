"""Issue 11: overfitting warnings, and eval naming a run that did not finish (``cli.main`` in this
process, :func:`cli_util.run_cli`; the text eval of the unfinished run is a real process)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cli_util import assert_ok, flowforge, run_cli
from flowforge.train.diagnose import OVERFIT_MIN_NATS, incomplete, overfitting


def _records(gaps: list[float], train: float = 3.0) -> list[dict]:
    return [
        {"step": 10 * (i + 1), "train_loss": train, "val_nll": train + g}
        for i, g in enumerate(gaps)
    ]


def test_overfitting_looks_at_the_kept_weights() -> None:
    rng = np.random.default_rng(0)
    dim = int(rng.integers(5, 20))
    big = 0.5 * dim + 1.0
    records = _records([0.1, big, 0.2])
    msg = overfitting(records, best_step=20, dim=dim)
    assert msg is not None and "at step 20" in msg and f"{big:.4f} nats above" in msg
    assert overfitting(records, best_step=10, dim=dim) is None
    assert overfitting(records, best_step=999, dim=dim) is None  # unknown step: the last record
    assert overfitting(_records([0.5 * dim - 0.1]), 10, dim) is None
    # the floor in nats for low dimensions
    assert overfitting(_records([OVERFIT_MIN_NATS - 0.1]), 10, 1) is None
    assert overfitting(_records([OVERFIT_MIN_NATS + 0.1]), 10, 1) is not None
    assert overfitting([{"step": 10, "train_loss": float("nan"), "val_nll": 1e9}], 10, 2) is None


def test_incomplete_names_the_last_validated_step(tmp_path: Path) -> None:
    records = _records([0.0, 0.0])
    msg = incomplete(tmp_path, {"total_steps": 600}, records)
    assert msg is not None and msg.startswith("incomplete: step 20 of 600")
    assert incomplete(tmp_path, {"total_steps": 600}, []).startswith("incomplete: step 0 of 600")
    (tmp_path / "results.json").write_text("{}")
    assert incomplete(tmp_path, {"total_steps": 600}, records) is None


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 rows, a wide MAF at a high learning rate, the last weights kept: overfitted."""
    root = tmp_path_factory.mktemp("overfit")
    x = np.random.default_rng(1).normal(size=(40, 3))
    rows = "".join(",".join(f"{v:.5f}" for v in r) + "\n" for r in x)
    (root / "t.csv").write_text("a,b,c\n" + rows)
    args = ["--data", "t.csv", "--flow", "maf", "--quiet", "--no-plots", "--no-size-from-data"]
    args += ["--no-restore-best", "--lr", "0.01", "--steps", "300", "--eval-every", "50"]
    proc = run_cli("train", *args, "--out", "r", cwd=root)
    assert_ok(proc)
    assert "warning: the validation NLL" in proc.stderr and "at step 300" in proc.stderr
    results = json.loads((root / "r" / "results.json").read_text())
    assert "overfitted the training rows" in results["warnings"][0]
    return root


def test_eval_warns_about_overfitting(overfit_run: Path) -> None:
    proc = run_cli("eval", "r", cwd=overfit_run)
    assert_ok(proc)
    assert "flowforge eval: warning: the validation NLL" in proc.stderr
    assert "incomplete" not in proc.stdout
    proc = run_cli("eval", "r", "--json", cwd=overfit_run)
    out = json.loads(proc.stdout)
    assert out["incomplete"] is None and "overfitted" in out["overfitting"]


def test_eval_of_a_run_that_did_not_finish(overfit_run: Path) -> None:
    run = overfit_run / "killed"
    shutil.copytree(overfit_run / "r", run)
    (run / "results.json").unlink()  # written only when training ends
    metrics = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(metrics[:2]) + "\n")  # validated at 50, 100
    proc = flowforge("eval", "killed", cwd=overfit_run)  # a real process
    assert_ok(proc)
    first, second = proc.stdout.splitlines()[:2]
    assert first.startswith("incomplete: step 100 of 300") and second.startswith("test NLL")
    out = json.loads(run_cli("eval", "killed", "--json", cwd=overfit_run).stdout)
    assert out["incomplete"].startswith("incomplete: step 100 of 300")


def test_warnings_say_what_happened() -> None:
    """The kept step-0 start is not quoted as the last step; a rising training loss is
    divergence, not overfitting; flow matching's squared error is not compared with an NLL."""
    from flowforge.train.diagnose import overfitting

    diverged = [
        {"step": 10, "train_loss": 3.0, "val_nll": 3.5},
        {"step": 20, "train_loss": 1e9, "val_nll": 2e9},
    ]
    line = overfitting(diverged, best_step=0, dim=2)
    assert line is not None and "diverged" in line and "overfitted" not in line
    assert "step-0 start" in line and "(the kept weights)" not in line
    overfit = [
        {"step": 10, "train_loss": 3.0, "val_nll": 3.5},
        {"step": 20, "train_loss": 1.0, "val_nll": 9.0},
    ]
    line = overfitting(overfit, best_step=20, dim=2)
    assert line is not None and "overfitted" in line and "at step 20 (the kept weights)" in line
    assert overfitting(overfit, best_step=0, dim=2) is None  # no record of the start to quote
    matching = [{"step": 10, "train_loss": 0.2, "val_nll": 2.9}]  # MSE against nats
    assert overfitting(matching, best_step=10, dim=2, likelihood=False) is None
    assert overfitting(matching, best_step=10, dim=2) is not None  # were it an NLL


def test_the_loss_plot_labels_flow_matching_as_a_squared_error(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from flowforge.train.plots import plot_losses

    one = [{"step": 5, "train_loss": 0.3, "val_nll": 2.9}]
    for likelihood in (True, False):
        path = plot_losses(one, tmp_path / f"loss{likelihood}.png", likelihood)
        assert path.read_bytes()[:4] == b"\x89PNG"
