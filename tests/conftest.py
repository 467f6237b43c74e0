"""Shared fixtures: every test starts from a fixed seed.

The tests use one intra-op thread (also in the subprocesses they start): the networks are
small, and on a shared 2-core machine a second OpenMP thread that waits for a busy core
makes each step many times slower.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
