"""Issue 11: ``flowforge sample`` writes to stdout like ``score``, messages on stderr.

The default output and ``-o -`` are read from ``python -m flowforge`` subprocesses (what
reaches a process's stdout); the other commands run ``cli.main`` in this process
(:func:`cli_util.run_cli`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cli_util import TINY, assert_ok, flowforge, run_cli


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sample")
    args = ["--data", "moons", "--flow", "maf", "--steps", "10", "--eval-every", "5"]
    assert_ok(run_cli("train", *TINY, *args, "--out", "run", cwd=root))
    return root


def _csv(text: str) -> tuple[list[str], np.ndarray]:
    lines = text.strip().splitlines()
    return lines[0].split(","), np.array([[float(v) for v in ln.split(",")] for ln in lines[1:]])


def test_sample_to_stdout_by_default_and_with_dash(toy_run: Path) -> None:
    a = flowforge("sample", "run", "-n", "6", "--seed", "3", cwd=toy_run)
    b = flowforge("sample", "run", "-n", "6", "--seed", "3", "-o", "-", cwd=toy_run)
    assert_ok(a)
    assert_ok(b)
    names, rows = _csv(a.stdout)
    assert names == ["x0", "x1"] and rows.shape == (6, 2) and np.isfinite(rows).all()
    assert a.stdout == b.stdout and a.stderr.strip() == ""
    c = run_cli("sample", "run", "-n", "6", "--seed", "4", cwd=toy_run)
    assert c.stdout != a.stdout  # the seed decides the samples


def test_sample_to_a_file_says_so_on_stderr_and_score_reads_it(toy_run: Path) -> None:
    proc = run_cli("sample", "run", "-n", "5", "--seed", "3", "-o", "s.csv", cwd=toy_run)
    assert_ok(proc)
    assert proc.stdout == "" and "wrote 5 samples to s.csv" in proc.stderr
    stdout = run_cli("sample", "run", "-n", "5", "--seed", "3", cwd=toy_run).stdout
    np.testing.assert_allclose(_csv(stdout)[1], _csv((toy_run / "s.csv").read_text())[1])
    (toy_run / "piped.csv").write_text(stdout)
    scored = run_cli("score", "run", "--input", "piped.csv", cwd=toy_run)
    assert_ok(scored)
    assert len(scored.stdout.strip().splitlines()) == 6  # a header and one score per sample
    out = run_cli("score", "run", "--input", "piped.csv", "-o", "ll.npy", cwd=toy_run)
    assert "wrote 5 log-likelihoods to ll.npy" in out.stderr  # the same stream as sample's


def test_help_shows_the_defaults(toy_run: Path) -> None:
    text = run_cli("sample", "--help", cwd=toy_run).stdout
    assert "(default: 1000)" in text and "seed of the base samples" in text
    assert "(default: 0)" in text
    train = run_cli("train", "--help", cwd=toy_run).stdout
    assert "--restore-best" in train and "(default: yes)" in " ".join(train.split())
