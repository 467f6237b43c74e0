"""The one run writer (:mod:`flowforge.runs.writer`): every kind of run (``flowforge train``,
``flowforge vi``, the estimators' ``save``) refuses a folder that is not a run, replaces only a
run, holds an exclusive lock for the life of the run, and a killed run of any kind evaluates
with the same "incomplete" note. Old run directories keep loading with the same numbers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import flowforge as ff
from cli_util import TINY, assert_bad_input, assert_ok, cli_env, run_cli
from flowforge.runs import ConfigError, RunError

OLD_RUNS = Path(__file__).parent / "fixtures" / "old_runs"
VI_TINY = ["--transforms", "2", "--samples", "8", "--eval-samples", "50", "--quiet", "--no-plots"]


def _thesis(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A folder that is not a run, and its files' bytes."""
    folder = tmp_path / "thesis"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "main.py").write_text("print('hi')\n")
    (folder / "thesis.tex").write_text("\\documentclass{article}\n")
    return folder, _files(folder)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_vi_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    folder, before = _thesis(tmp_path)
    proc = run_cli("vi", *VI_TINY, "--steps", "3", "--overwrite", "--out", folder, cwd=tmp_path)
    assert_bad_input(proc, str(folder), "not a flowforge run")
    assert _files(folder) == before


def test_train_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    folder, before = _thesis(tmp_path)
    proc = run_cli("train", "--steps", "3", *TINY, "--out", folder, cwd=tmp_path)
    assert_bad_input(proc, str(folder), "not a flowforge run")
    assert _files(folder) == before


@pytest.mark.parametrize("flow", ["nsf", "auto"])
def test_train_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path: Path, flow: str) -> None:
    folder, before = _thesis(tmp_path)
    args = ["--steps", "3", *TINY, "--flow", flow, "--overwrite", "--out", folder]
    proc = run_cli("train", *args, cwd=tmp_path)
    assert_bad_input(proc, str(folder), "not a flowforge run")
    assert _files(folder) == before


def test_train_overwrite_replaces_only_the_run(tmp_path: Path) -> None:
    """``flowforge train --overwrite`` replaces a run (its stale files go, a file it did not
    write stays); without it the run is kept and the message names the flag; it starts a new
    run, so ``--resume`` refuses it."""
    run = tmp_path / "run"
    assert_ok(run_cli("train", "--steps", "3", *TINY, "--out", run, cwd=tmp_path))
    (run / "notes.txt").write_text("mine")
    (run / "samples.png").write_bytes(b"an old plot")  # a run's file: removed
    weights = (run / "model.safetensors").read_bytes()
    proc = run_cli("train", "--steps", "4", *TINY, "--out", run, cwd=tmp_path)
    assert_bad_input(proc, "already exists", "--overwrite replaces it", f"--resume {run}")
    assert (run / "model.safetensors").read_bytes() == weights
    proc = run_cli("train", "--resume", run, "--overwrite", cwd=tmp_path)
    assert_bad_input(proc, "--overwrite", "--resume")
    args = ["--steps", "4", *TINY, "--seed", "1", "--overwrite", "--out", run]
    assert_ok(run_cli("train", *args, cwd=tmp_path))
    assert (run / "notes.txt").read_text() == "mine"
    assert not (run / "samples.png").exists()
    assert json.loads((run / "config.json").read_text())["config"]["steps"] == 4
    assert json.loads((run / "results.json").read_text())["steps"] == 4
    assert (run / "model.safetensors").read_bytes() != weights
    assert not (run / ".lock").exists()


def _estimator() -> ff.FlowDensity:
    x = np.random.default_rng(0).normal(size=(200, 2))
    return ff.FlowDensity(transforms=1, hidden=(8,), max_epochs=2, random_state=0).fit(x)


def test_estimator_save_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    folder, before = _thesis(tmp_path)
    with pytest.raises(ConfigError, match="not a flowforge run"):
        _estimator().save(folder)
    assert _files(folder) == before


def test_overwrite_replaces_only_the_run(tmp_path: Path) -> None:
    """A run is replaced, its stale files go, and a file the run did not write stays."""
    run = tmp_path / "run"
    assert_ok(run_cli("vi", *VI_TINY, "--steps", "3", "--out", run, cwd=tmp_path))
    (run / "notes.txt").write_text("mine")
    (run / "density.png").write_bytes(b"an old plot")  # a run's file: replaced
    proc = run_cli("vi", *VI_TINY, "--steps", "4", "--overwrite", "--out", run, cwd=tmp_path)
    assert_ok(proc)
    assert (run / "notes.txt").read_text() == "mine"
    assert not (run / "density.png").exists()
    assert json.loads((run / "config.json").read_text())["config"]["steps"] == 4
    # the estimators' save replaces a run too (an old estimator run, and a VI run)
    est_dir = tmp_path / "est"
    shutil.copytree(OLD_RUNS / "estimator", est_dir)
    _estimator().save(est_dir)
    assert json.loads((est_dir / "results.json").read_text())["task"] == "estimator"


def test_a_second_writer_fails_at_once_naming_the_holder(tmp_path: Path) -> None:
    root = tmp_path / "run"
    first = ff.runs.RunWriter.create(root, {"format": "flowforge-run"})
    t0 = time.perf_counter()
    with pytest.raises(RunError, match=f"in use by another flowforge process \\(PID {os.getpid()}"):
        ff.runs.RunWriter.create(root, {"format": "flowforge-run"}, overwrite=True)
    with pytest.raises(RunError, match=f"PID {os.getpid()}"):
        ff.runs.RunWriter.reopen(root)
    assert time.perf_counter() - t0 < 5
    first.finish({})
    assert sorted(p.name for p in root.iterdir()) == ["config.json", "results.json"]
    ff.runs.RunWriter.reopen(root).close()  # free again


def _wait_for(path: Path, proc: object, timeout: float = 120) -> None:
    t0 = time.perf_counter()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()  # type: ignore[attr-defined]
        assert time.perf_counter() - t0 < timeout, f"{path} did not appear"
        time.sleep(0.2)


def test_concurrent_train_fails_at_once_and_a_killed_run_is_incomplete(tmp_path: Path) -> None:
    """Two ``flowforge train`` on one ``--out``: the second exits 2 at once naming the first's
    PID; the first, killed (SIGKILL), leaves a run that evaluates with the incomplete note and
    whose lock died with it."""
    import subprocess
    import sys

    run = tmp_path / "run"
    args = ["train", "--steps", "100000", "--eval-every", "50", *TINY, "--out", str(run)]
    first = subprocess.Popen(
        [sys.executable, "-m", "flowforge", *args],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(run / "metrics.jsonl", first)
        second = run_cli("train", "--steps", "10", *TINY, "--out", run, cwd=tmp_path)
        assert_bad_input(second, f"PID {first.pid}", str(run))
        t0 = time.perf_counter()  # --overwrite does not take a run in use either
        second = run_cli("train", "--steps", "10", *TINY, "--overwrite", "--out", run, cwd=tmp_path)
        assert_bad_input(second, f"PID {first.pid}", str(run))
        assert time.perf_counter() - t0 < 10
        assert (run / "config.json").exists() and (run / "metrics.jsonl").exists()
        resumed = run_cli("train", "--resume", run, cwd=tmp_path)
        assert_bad_input(resumed, f"PID {first.pid}")
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    assert ff.runs.lock.lock_holder(run) is None  # released with the process
    proc = run_cli("eval", run, cwd=tmp_path)
    assert_ok(proc)
    note = proc.stdout.splitlines()[0]
    assert note.startswith("incomplete: step ") and "of 100000" in note, note
    assert "flowforge train --resume" in note
    assert ff.runs.open_run(run).incomplete == note


def test_a_killed_vi_run_evaluates_with_the_incomplete_note(tmp_path: Path) -> None:
    from flowforge.vi.run import VIConfig, run_vi

    class Killed(Exception):
        pass

    def kill(step: int, record: dict[str, float]) -> None:
        if step + 1 == 20:
            raise Killed

    run = tmp_path / "run"
    cfg = VIConfig(transforms=2, steps=50, samples=8, eval_samples=50, checkpoint_every=10)
    with pytest.raises(Killed):
        run_vi(VIConfig(**{**cfg.to_dict(), "out": str(run), "plots": False}), kill)
    proc = run_cli("eval", run, cwd=tmp_path)
    assert_ok(proc)
    note = proc.stdout.splitlines()[0]
    assert note.startswith("incomplete: step 20 of 50 (the run stopped before it finished"), note
    assert f"flowforge vi --resume {run}" in note
    proc = run_cli("eval", run, "--json", cwd=tmp_path)
    assert json.loads(proc.stdout)["incomplete"] == note


def test_estimator_runs_finish_and_a_killed_save_is_incomplete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    est = _estimator()
    done = est.save(tmp_path / "done")
    proc = run_cli("eval", done, cwd=tmp_path)
    assert_ok(proc)
    assert "incomplete" not in proc.stdout  # a finished save is not incomplete
    assert ff.runs.open_run(done).incomplete is None
    replace = os.replace

    def killed_at_results(src: str, dst: str) -> None:
        if Path(dst).name == "results.json":
            raise KeyboardInterrupt  # the process stops before it writes results.json
        replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_at_results)
    with pytest.raises(KeyboardInterrupt):
        est.save(tmp_path / "killed")
    monkeypatch.setattr(os, "replace", replace)
    proc = run_cli("eval", tmp_path / "killed", cwd=tmp_path)
    assert_ok(proc)
    note = proc.stdout.splitlines()[0]
    assert note.startswith("incomplete: step 0 of 0 (the run stopped before it finished"), note
    assert "save it again" in note


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("train", [-1.916821002960205, -2.231661081314087]),
        ("vi", [-2.288785696029663, -2.478853225708008]),
        ("estimator", [-1.8068557977676392, -2.129021644592285]),
    ],
)
def test_old_runs_load_with_the_same_numbers(kind: str, expected: list[float]) -> None:
    """Runs written before the run writer (tests/fixtures/old_runs) load, give the same
    log-densities, and read as finished (an old estimator run has no results.json)."""
    run = ff.runs.open_run(OLD_RUNS / kind)
    x = torch.tensor([[0.1, 0.2], [-0.5, 0.7]])
    lp = run.flow.log_prob(x.to(next(run.flow.parameters()).dtype))
    assert lp.tolist() == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert run.incomplete is None


def test_an_old_train_run_killed_evaluates_incomplete_and_resumes(tmp_path: Path) -> None:
    run = tmp_path / "train"
    shutil.copytree(OLD_RUNS / "train", run)
    (run / "results.json").unlink()
    proc = run_cli("eval", run, cwd=tmp_path)
    assert_ok(proc)
    assert proc.stdout.startswith("incomplete: step 20 of 20")
    proc = run_cli("train", "--resume", run, "--steps", "30", cwd=tmp_path)
    assert_ok(proc)
    assert json.loads((run / "results.json").read_text())["steps"] == 30
    assert not (run / ".lock").exists()
