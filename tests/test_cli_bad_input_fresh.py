"""A fresh bad-input pass over every subcommand (issue 22, round four): each case crashed, printed
a traceback, or was taken without a word before; now one line on stderr, exit 2, nothing
written."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cli_util import TINY, TINY_TABLE, assert_bad_input, run_cli
from flowforge.train.applicable import check_warmup
from flowforge.train.config import ConfigError, TrainConfig

VI = ["--steps", "2", "--samples", "8", "--eval-samples", "50", "--transforms", "2"]


@pytest.fixture
def runs(tiny_runs: Path) -> Path:
    return tiny_runs  # the tiny runs the bad-input tests share (conftest.py)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # a segmentation fault, and a half-written run
        (["--threads", "100000"], f"more than this machine's {os.cpu_count()} logical CPUs"),
        # ValueError: Overflow when unpacking long long
        (["--seed", str(2**70)], "seed must be a 64-bit integer"),
        # taken: the learning rate never reached --lr
        (["--warmup-steps", "2"], "--warmup-steps 2 is not below the run's 2 steps"),
        # taken: hidden sizes the context networks of an unconditional run
        (["--flow", "radial", "--hidden", "8"], "sizes each layer's context network"),
    ],
)
def test_train_options(tmp_path: Path, args: list[str], expected: str) -> None:
    proc = run_cli("train", *TINY, "--steps", "2", *args, "--out", "run", cwd=tmp_path)
    assert_bad_input(proc, expected)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "rows", "expected"),
    [
        # Standardizer: mean must be finite (3 lines: numpy's overflow warning first)
        ("big.csv", "a,b\n" + "".join(f"{i},{1e300 * (i % 2)}\n" for i in range(30)),
         "data row 2, column 'b': value 1e+300 is beyond float32's range"),
        ("big.npy", np.r_[np.ones((29, 2)), [[1e39, 1.0]]],
         "data row 30, column '0': value 1e+39 is beyond float32's range"),
    ],
)  # fmt: skip
def test_values_beyond_float32_are_named(
    tmp_path: Path, name: str, rows: object, expected: str
) -> None:
    if isinstance(rows, str):
        (tmp_path / name).write_text(rows)
    else:
        np.save(tmp_path / name, rows)
    proc = run_cli("train", "--data", name, *TINY_TABLE, "--steps", "2", "--out", "r", cwd=tmp_path)
    assert_bad_input(proc, expected)
    assert not (tmp_path / "r").exists()


def test_a_default_warmup_longer_than_the_run_is_a_warning() -> None:
    image = {"epochs": 150.0, "warmup_steps": 200, "logit_alpha": 1e-3}  # the image defaults
    cfg = TrainConfig.from_layers(image, {"flow": "glow", "data": "digits", "steps": 50})
    line = check_warmup(cfg, 50)
    assert line is not None and "the preset's default warmup" in line
    with pytest.raises(ConfigError, match="--warmup-steps 60 is not below the run's 50 steps"):
        check_warmup(TrainConfig.from_layers({"warmup_steps": 60}), 50)
    assert check_warmup(TrainConfig.from_layers({"warmup_steps": 49}), 50) is None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["eval", "tab", "--samples", "3"], "--samples is the noise samples per image"),
        (["eval", "toy", "--data-dir", "."], "--data-dir is where the on-disk sets are read"),
        (["eval", "vi", "--data-dir", "."], "a variational-inference run"),
        (["sample", "toy", "--attention-temperature", "2", "-o", "s.npy"], "without --guidance"),
        (["score", "toy", "--input", "rows.npy", "--threshold", "nan"], "a finite number"),
        (["score", "toy", "--input", "rows.npy", "--header"], "a .npy file has no header row"),
        (["score", "tab", "--input", "rows.npy", "--seed", "3"], "--seed is the dequantization"),
        (["datasets", "--data-dir", "rows.npy"], "--data-dir rows.npy is a file"),
        (["sample", "toy", "-n", "0", "-o", "s.npy"], "-n must be positive"),  # not 1000
        (["vi", *VI, "--anneal", "100", "--out", "o"], "anneal (100 steps) must not exceed"),
        (["vi", *VI, "--seed", str(2**70), "--out", "o"], "seed must be a 64-bit integer"),
        (["vi", *VI, "--flow", "planar", "--hidden", "8", "--out", "o"], "context network"),
    ],
)
def test_other_subcommands(runs: Path, args: list[str], expected: str) -> None:
    before = sorted(os.listdir(runs))
    assert_bad_input(run_cli(*args, cwd=runs), expected)
    assert sorted(os.listdir(runs)) == before


def test_an_audio_flow_on_a_table_says_audio(tmp_path: Path) -> None:
    args = ["--data", "wine", "--flow", "waveglow", "--steps", "2", "--out", "r"]
    assert_bad_input(run_cli("train", *args, cwd=tmp_path), "'waveglow' is an audio flow")
