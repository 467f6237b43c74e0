"""Shared fixtures: every test starts from a fixed seed; the bad-input tests share tiny runs.

The tests use one intra-op thread (also in the subprocesses they start): the networks are
small, and on a shared 2-core machine a second OpenMP thread that waits for a busy core
makes each step many times slower.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding three tiny runs the bad-input tests point at (``toy``: 2-D data,
    ``tab``: the wine table, ``vi``: a variational run) and ``rows.npy`` (4 x 2 zeros)."""
    from cli_util import TINY, TINY_TABLE, assert_ok, run_cli

    cwd = tmp_path_factory.mktemp("runs")
    assert_ok(run_cli("train", *TINY, "--steps", "2", "--out", "toy", cwd=cwd))
    assert_ok(run_cli("train", "--data", "wine", *TINY_TABLE, "--steps", "2", "--out", "tab",
                      cwd=cwd))  # fmt: skip
    vi = ["--steps", "2", "--samples", "8", "--eval-samples", "50", "--transforms", "2"]
    assert_ok(run_cli("vi", *vi, "--no-plots", "--quiet", "--out", "vi", cwd=cwd))
    np.save(cwd / "rows.npy", np.zeros((4, 2), np.float32))
    return cwd
