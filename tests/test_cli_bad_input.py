"""The third bad-input round: options of the wrong type, sizes that cannot fit, edited runs;
each one line on stderr, exit status 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cli_util import TINY, assert_bad_input, assert_ok, run_cli
from flowforge.eval.score import sample_rows
from flowforge.runs import open_run


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("toy")
    assert_ok(run_cli("train", *TINY, "--steps", "2", "--out", "run", cwd=cwd))
    return cwd / "run"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--flow", "ffjord", "--flow-options", '{"adjoint": "no"}'], "adjoint of type bool"),
        (["--flow-options", '{"residual_blocks": 1000000000}'], "1000000000"),
        (["--transforms", "1000000000"], "1000000000"),
        (["--hidden", "1000000000"], "cannot fit"),
        (["--flow", "ffjord", "--hidden", "1000000000"], "cannot fit"),
        (["--flow", "maf", "--hidden", "100000,100000,100000"], "cannot fit"),
    ],
)
def test_options_of_the_wrong_type_or_size_are_one_line(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    proc = run_cli("train", *TINY, "--steps", "2", *args, "--out", "run", cwd=tmp_path)
    assert_bad_input(proc, expected)
    assert list(tmp_path.iterdir()) == []


def test_sampling_more_than_fits_is_one_line(toy_run: Path, tmp_path: Path) -> None:
    proc = run_cli("sample", toy_run, "-n", str(10**13), "-o", "s.npy", cwd=tmp_path)
    assert_bad_input(proc, "-n 10000000000000", "more than this machine's memory")
    assert list(tmp_path.iterdir()) == []


def test_sampling_in_chunks_gives_the_one_pass_samples(toy_run: Path) -> None:
    run = open_run(toy_run)
    one = sample_rows(run, 50, seed=3)
    assert torch.equal(sample_rows(run, 50, seed=3, chunk=50), one)
    chunked = sample_rows(run, 50, seed=3, chunk=7)
    assert chunked.shape == (50, 2) and torch.isfinite(chunked).all()
    assert torch.equal(sample_rows(run, 50, seed=3, chunk=7), chunked)  # seeded
