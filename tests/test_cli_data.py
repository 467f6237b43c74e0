"""The command line on user files, images and TOML configs (``cli.main`` in this process:
:func:`cli_util.run_cli`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cli_util import TINY_TABLE, assert_ok, run_cli
from flowforge.core.defensive import DefensiveMixture
from flowforge.data import load_dataset
from flowforge.runs import open_run


def test_user_csv_is_scored_in_its_original_units(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    z = rng.standard_normal((600, 3))
    x = z @ np.array([[3.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.0, 0.2, 100.0]]) + [10.0, -5.0, 1e3]
    (tmp_path / "data.csv").write_text(
        "speed,load,temp\n" + "".join(f"{a:.6f},{b:.6f},{c:.6f}\n" for a, b, c in x)
    )
    args = [
        *TINY_TABLE,
        "--data",
        "data.csv",
        "--flow",
        "maf",
        "--steps",
        "30",
        "--eval-every",
        "15",
    ]
    assert_ok(run_cli("train", *args, "--out", "run", cwd=tmp_path))
    run = open_run(tmp_path / "run")
    assert run.spec.standardizer is not None and run.spec.columns == ["speed", "load", "temp"]

    # The test rows in raw units, as the run saw them (same file, same seed).
    ds = load_dataset(tmp_path / "data.csv", seed=0)
    assert ds.standardizer is not None
    raw = ds.standardizer.inverse(ds.test).double().numpy()
    np.save(tmp_path / "test.npy", raw)
    assert_ok(run_cli("score", "run", "--input", "test.npy", "-o", "s.npy", cwd=tmp_path))
    scores = np.load(tmp_path / "s.npy")
    proc = run_cli("eval", "run", "--json", cwd=tmp_path)
    assert_ok(proc)
    nll = json.loads(proc.stdout)["nll"]
    assert -scores.mean() == pytest.approx(nll, abs=1e-3)
    # Raw-unit NLL = NLL of the standardised rows under the inner flow - log|det| of the
    # standardisation (the training statistics saved in the run).
    # A table's model is the defensive mixture (1 - w) flow + w Gaussian start (issue 23): both
    # components start with the same Standardize.
    model = run.flow
    assert isinstance(model, DefensiveMixture)

    def standardized_lp(flow: Any) -> torch.Tensor:
        z, ladj = flow.bijection.bijections[1](ds.test)
        return (flow.base.log_prob(z) + ladj).double()

    with torch.no_grad():
        w = torch.tensor(model.weight, dtype=torch.float64)
        lp = torch.logaddexp(
            standardized_lp(model.flow) + torch.log1p(-w),
            standardized_lp(model.fallback) + torch.log(w),
        )
        nll_std = -lp.mean().item()
    assert nll == pytest.approx(nll_std - ds.standardizer.log_abs_det().item(), abs=1e-3)

    out = tmp_path / "samples.csv"
    assert_ok(run_cli("sample", "run", "-n", "4", "-o", out, cwd=tmp_path))
    lines = out.read_text().splitlines()
    assert lines[0] == "speed,load,temp" and len(lines) == 5
    third = [float(line.split(",")[2]) for line in lines[1:]]
    assert all(500 < v < 1500 for v in third)  # samples come back in the original units


def test_columns_select_the_same_features_at_train_and_score_time(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = "".join(f"{a:.5f},{b:.5f},{c:.5f}\n" for a, b, c in rng.standard_normal((300, 3)))
    (tmp_path / "d.csv").write_text("a,b,c\n" + rows)
    args = [*TINY_TABLE, "--data", "d.csv", "--columns", "c,a", "--steps", "4", "--eval-every", "2"]
    assert_ok(run_cli("train", *args, "--out", "run", cwd=tmp_path))
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["model"]["columns"] == ["c", "a"] and record["model"]["kwargs"]["features"] == 2
    assert_ok(run_cli("score", "run", "--input", "d.csv", "-o", "s.npy", cwd=tmp_path))
    assert np.load(tmp_path / "s.npy").shape == (300,)


def test_digits_reports_bits_per_dim_and_samples_images(tmp_path: Path) -> None:
    args = [
        *TINY_TABLE,
        "--data",
        "digits",
        "--flow",
        "realnvp",
        "--epochs",
        "1",
        "--batch-size",
        "128",
    ]
    proc = run_cli("train", *args, "--logit-alpha", "0.05", "--out", "run", cwd=tmp_path)
    assert_ok(proc)
    assert "test bits/dim:" in proc.stdout
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["model"]["levels"] == 17 and record["model"]["logit_alpha"] == 0.05
    assert record["total_steps"] == math.ceil(1437 / 128)  # one epoch of the training rows
    proc = run_cli("eval", "run", "--json", cwd=tmp_path)
    assert_ok(proc)
    got = json.loads(proc.stdout)
    d, k = 64, 17
    assert got["bpd"] == pytest.approx((got["nll"] + d * math.log(k)) / (d * math.log(2)))
    assert 0 < got["bpd"] < 20
    assert_ok(run_cli("sample", "run", "-n", "16", "-o", "digits.png", cwd=tmp_path))
    assert (tmp_path / "digits.png").read_bytes()[:4] == b"\x89PNG"
    assert_ok(run_cli("sample", "run", "-n", "3", "-o", "digits.npy", cwd=tmp_path))
    levels = np.load(tmp_path / "digits.npy")
    assert levels.shape == (3, 1, 8, 8) and levels.min() >= 0 and levels.max() <= 16


def test_toml_config_with_flag_overrides(tmp_path: Path) -> None:
    (tmp_path / "moons.toml").write_text(
        'data = "moons"\nflow = "realnvp"\nsteps = 1000\nhidden = [8, 8]\n'
        'transforms = 2\nschedule = "plateau"\noptimizer = "adamw"\nweight_decay = 1e-4\n'
        "n_val = 300\nn_test = 300\nplots = false\nquiet = true\n"
    )
    proc = run_cli("train", "--config", "moons.toml", "--steps", "12", "--eval-every", "6",
                     "--out", "run", cwd=tmp_path)  # fmt: skip
    assert_ok(proc)
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert (cfg["data"], cfg["flow"], cfg["steps"], cfg["hidden"]) == (
        "moons",
        "realnvp",
        12,
        [8, 8],
    )
    assert (cfg["schedule"], cfg["optimizer"]) == ("plateau", "adamw")
