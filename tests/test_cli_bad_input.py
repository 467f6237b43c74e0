"""The third bad-input round: options of the wrong type, sizes that cannot fit, edited runs;
each one line on stderr, exit status 2, nothing written."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_util import TINY, TINY_TABLE, assert_bad_input, assert_ok, run_cli
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


@pytest.fixture(scope="module")
def table_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A standardised 3-column table run."""
    cwd = tmp_path_factory.mktemp("table")
    x = np.random.default_rng(0).normal(size=(200, 3)) * [1.0, 3.0, 0.5]
    (cwd / "t.csv").write_text("a,b,c\n" + "".join(f"{a},{b},{c}\n" for a, b, c in x))
    args = [*TINY_TABLE, "--data", "t.csv", "--steps", "2", "--out", "run"]
    assert_ok(run_cli("train", *args, cwd=cwd))
    return cwd / "run"


def _edit_standardizer(config: Path, key: str, value: object) -> None:
    record = json.loads(config.read_text())
    found = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "standardizer" and isinstance(v, dict):
                    v[key][0] = value
                    found.append(k)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(record)
    assert found
    config.write_text(json.dumps(record))


@pytest.mark.parametrize(("key", "value"), [("std", 0.0), ("std", -1.0), ("std", "x"),
                                            ("std", None), ("mean", [1.0]), ("mean", math.inf)])  # fmt: skip
def test_an_edited_standardizer_is_one_line(
    table_run: Path, tmp_path: Path, key: str, value: object
) -> None:
    run = tmp_path / "run"
    shutil.copytree(table_run, run)
    _edit_standardizer(run / "config.json", key, value)
    for command in (["eval", run], ["sample", run, "-n", "3"]):
        proc = run_cli(*command, cwd=tmp_path)
        assert_bad_input(proc, "model.standardizer", f"{key}[0] is {value!r}")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ('{"rtol": 1e-30}', "expected rtol >= 3.8e-06"),
        ('{"atol": 0.000001}', "expected atol >= 3.8e-06"),
        ('{"method": "rk4", "rtol": 0.001}', "'rtol' does nothing with method 'rk4'"),
        ('{"solver_steps": 50}', "'solver_steps' does nothing with method 'dopri5'"),
    ],
)
def test_solver_options_that_cannot_be_honoured_are_one_line(
    tmp_path: Path, options: str, expected: str
) -> None:
    """rtol 1e-30 ran at 3.8e-6 while config.json recorded 1e-30; steps with dopri5 and
    tolerances with rk4 were accepted and ignored."""
    args = ["--flow", "ffjord", "--flow-options", options, "--steps", "2", "--out", "run"]
    assert_bad_input(run_cli("train", *TINY, *args, cwd=tmp_path), expected)
    assert list(tmp_path.iterdir()) == []


def test_messages_say_what_is_wrong(tmp_path: Path) -> None:
    """--resume of a VI run said 'missing file: checkpoint.safetensors'; --out naming a file
    said the folder was 'not empty'."""
    tiny = ["--steps", "2", "--samples", "8", "--eval-samples", "50", "--transforms", "2"]
    assert_ok(run_cli("vi", *tiny, "--no-plots", "--out", "vi", cwd=tmp_path))
    proc = run_cli("train", "--resume", "vi", cwd=tmp_path)
    assert_bad_input(proc, "variational-inference run", "flowforge vi --resume vi")
    (tmp_path / "afile").write_text("x")
    proc = run_cli("train", *TINY, "--steps", "2", "--out", "afile", cwd=tmp_path)
    assert_bad_input(proc, "--out afile is a file")
    assert (tmp_path / "afile").read_text() == "x"


def test_digits_takes_n_val_as_the_readme_says() -> None:
    from flowforge.data import load_dataset

    ds = load_dataset("digits", n_val=100, n_test=50)
    assert ds.val is not None and ds.val.shape[0] == 100 and ds.test.shape[0] == 50
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "`digits`\n  included, are split at random and take them" in readme
