"""Issue 11: numbers on user data that are never quietly wrong.

Library-level checks first (header rule, duplicate names, split sizes, fingerprints, checksums,
float64 standardisation, non-finite test rows), then the command line in this process
(:func:`cli_util.run_cli`) on one small trained run (columns matched by name, non-finite scores
flagged, flipped weight bytes, a changed data file, the run's record of header and splits).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cli_util import TINY_TABLE, assert_bad_input, assert_ok, run_cli
from flowforge.data import DataError, Dataset, load_dataset, read_table
from flowforge.data.base import fit_standardize, random_split
from flowforge.data.user import check_source, file_source, load_user_file
from flowforge.eval.likelihood import (
    NonFiniteLikelihood,
    standardized_log_likelihoods,
    without_standardize,
)
from flowforge.runs import RunError, load_weights, save_weights
from flowforge.runs.recipe import ModelSpec, build_flow
from flowforge.train import run as train_run
from flowforge.train.config import TrainConfig


def _csv(path: Path, header: str | None, x: np.ndarray) -> Path:
    lines = [] if header is None else [header]
    lines += [",".join(f"{v:.6f}" for v in row) for row in x]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- header rule and names --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "is_header"),
    [
        ("0,1,2,3", True),  # the column numbers pandas writes for an unnamed frame
        ("1,2,3,4", True),
        ("0,1", False),  # two columns: too likely to be data
        ("5,3,2,1", False),
        ("0,1,2,4", False),
        ("0.0,1.0,2.0,3.0", False),  # written as floats: data
        ("a,1,2,3", True),
    ],
)
def test_header_rule(tmp_path: Path, first: str, is_header: bool) -> None:
    d = len(first.split(","))
    rows = np.arange(12 * d, dtype=float).reshape(12, d)
    p = _csv(tmp_path / "t.csv", first, rows)
    if first.startswith("a"):
        x, names = read_table(p)
        assert names[0] == "a" and x.shape == (12, d)
        return
    x, names = read_table(p)
    assert x.shape == (12 if is_header else 13, d)
    if not is_header:
        np.testing.assert_array_equal(x[0], [float(c) for c in first.split(",")])
    forced, _ = read_table(p, header=False)
    assert forced.shape == (13, d)
    kept, names = read_table(p, header=True)
    assert kept.shape == (12, d) and names == first.split(",")


def test_no_header_on_a_text_header_names_the_cell(tmp_path: Path) -> None:
    p = _csv(tmp_path / "t.csv", "a,b,c", np.ones((12, 3)))
    with pytest.raises(DataError, match=r"row 1, column index 0: 'a' is not a number"):
        read_table(p, header=False)
    with pytest.raises(DataError, match="no header row"):
        np.save(tmp_path / "t.npy", np.ones((12, 3)))
        read_table(tmp_path / "t.npy", header=True)


def test_duplicate_column_names_are_an_error(tmp_path: Path) -> None:
    p = _csv(tmp_path / "t.csv", "a,b,a", np.ones((12, 3)))
    with pytest.raises(DataError, match=r"duplicate column names.*'a' \(columns 0 and 2\)"):
        read_table(p)


# -- split sizes ------------------------------------------------------------------------------


def test_n_val_n_test_counts_and_fractions_for_user_files(tmp_path: Path) -> None:
    p = _csv(tmp_path / "t.csv", "a,b", np.random.default_rng(0).normal(size=(200, 2)))
    ds = load_user_file(p)
    assert ds.val.shape[0] == ds.test.shape[0] == 20 and ds.train is not None
    ds = load_user_file(p, n_val=30, n_test=0.25)
    assert (ds.val.shape[0], ds.test.shape[0], ds.train.shape[0]) == (30, 50, 120)
    ds = load_dataset(p, n_val=7.0, n_test=3)  # TOML/flag floats that are whole numbers
    assert (ds.val.shape[0], ds.test.shape[0]) == (7, 3)
    for bad, msg in ((2.5, "whole number"), (0, "count >= 1"), (-0.1, "count >= 1")):
        with pytest.raises(DataError, match=msg):
            load_user_file(p, n_val=bad)
    with pytest.raises(DataError, match="not below the table's 200 rows"):
        load_user_file(p, n_test=500)
    with pytest.raises(DataError, match="no training row"):
        load_user_file(p, n_val=0.5, n_test=0.5)


def test_n_val_on_toy_and_published_sets() -> None:
    assert load_dataset("moons", n_val=12, n_test=13).val.shape[0] == 12
    with pytest.raises(DataError, match="count of fresh samples"):
        load_dataset("moons", n_val=0.1)
    with pytest.raises(DataError, match="published splits"):
        load_dataset("power", n_val=100)
    with pytest.raises(DataError, match="header= applies"):
        load_dataset("wine", header=True)


# -- fingerprint ------------------------------------------------------------------------------


def test_fingerprint_refuses_changed_data(tmp_path: Path) -> None:
    x = np.random.default_rng(1).normal(size=(50, 3))
    p = _csv(tmp_path / "t.csv", "a,b,c", x)
    stored = load_user_file(p).source
    assert stored is not None
    assert (stored["rows"], stored["columns"], stored["header"]) == (50, 3, True)
    assert len(stored["sha256"]) == 64
    check_source(stored, load_user_file(p).source, str(p))  # unchanged: passes
    _csv(p, "a,b,c", x[::-1])  # rows reordered: same shape, other bytes
    with pytest.raises(DataError, match=r"changed since the run was trained.*content"):
        check_source(stored, load_user_file(p).source, str(p))
    _csv(p, "a,b,c", x[:40])
    with pytest.raises(DataError, match="rows 50 -> 40"):
        check_source(stored, file_source(p, read_table(p)[0], True), str(p))
    check_source(None, stored, str(p))  # a run written before fingerprints


# -- float64 standardisation ------------------------------------------------------------------


def _big_column(n: int = 200) -> np.ndarray:
    rng = np.random.default_rng(2)
    return np.stack([1.7e9 + rng.integers(-100, 101, n), rng.normal(size=n)], axis=1)


def test_standardisation_keeps_distinct_values_of_a_large_column() -> None:
    x = _big_column()
    train, val, test = random_split(x, 0)
    _, (t_train, _, _) = fit_standardize(train, val, test)
    assert np.unique(train[:, 0]).size > 80
    assert torch.unique(t_train[:, 0]).numel() == np.unique(train[:, 0]).size


def _flow(mean: np.ndarray, std: np.ndarray) -> nn.Module:
    spec = ModelSpec(
        preset="maf",
        kwargs={"features": 2, "transforms": 2, "hidden": (8,)},
        kind="tabular",
        data_shape=(2,),
        standardizer={"mean": mean.tolist(), "std": std.tolist(), "shape": [2]},
    )
    torch.manual_seed(0)
    flow = build_flow(spec)
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.3)  # non-zero: a zero last layer would hide the transform
    return flow


def test_scoring_standardises_in_float64_then_casts() -> None:
    x = _big_column()
    mean, std = x.mean(0), x.std(0)
    flow = _flow(mean, std)
    assert without_standardize(flow) is not None
    z = torch.from_numpy((x - mean) / std)
    ll = standardized_log_likelihoods(flow, z, -float(np.log(std).sum()))
    distinct = np.unique(x, axis=0).shape[0]
    assert torch.unique(ll).numel() == distinct  # every distinct row its own score
    # rows that differ only in the big column: float32 raw values (spacing 128) tie them
    same = x.copy()
    same[:, 1] = 0.3
    ll = standardized_log_likelihoods(
        flow, torch.from_numpy((same - mean) / std), -float(np.log(std).sum())
    )
    assert torch.unique(ll).numel() == np.unique(same[:, 0]).size > 100
    raw = flow.log_prob(torch.from_numpy(same).float()).double()  # the old float32 path
    assert torch.unique(raw).numel() <= 4
    # where float32 holds the raw values well, both paths agree
    small = np.random.default_rng(5).normal(size=(50, 2)) * [3.0, 0.5] + [1.0, -2.0]
    m, s = small.mean(0), small.std(0)
    flow = _flow(m, s)
    ll = standardized_log_likelihoods(flow, torch.from_numpy((small - m) / s), -np.log(s).sum())
    ref = flow.log_prob(torch.from_numpy(small).float()).double()
    torch.testing.assert_close(ll, ref, rtol=1e-5, atol=1e-5)


# -- non-finite test rows are never averaged away ---------------------------------------------


class _Spiky(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        ll = -0.5 * (x**2).sum(-1) + self.w
        return torch.where(x[:, 0] > 100, torch.full_like(ll, -math.inf), ll)


def test_test_summary_with_a_minus_inf_row_names_it() -> None:
    test = torch.zeros(18, 2)
    test[4, 0] = 1000.0
    ds = Dataset("t", "tabular", (2,), torch.zeros(10, 2), torch.zeros(3, 2), test)
    with pytest.raises(NonFiniteLikelihood, match=r"1 of 18 rows \(rows 4;"):
        train_run.test_summary(_Spiky(), ds, TrainConfig(), "test")


# -- checksums of weights files ---------------------------------------------------------------


def test_flipped_weight_bytes_are_refused(tmp_path: Path) -> None:
    module = nn.Linear(4, 3)
    path = tmp_path / "model.safetensors"
    save_weights(path, module)
    side = tmp_path / "model.safetensors.sha256"
    assert side.read_text().split()[1] == "model.safetensors"
    load_weights(path, nn.Linear(4, 3))  # intact: loads
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40  # a flipped bit inside a tensor: still a valid safetensors file
    path.write_bytes(bytes(data))
    with pytest.raises(RunError, match=r"model\.safetensors is corrupted: its SHA-256"):
        load_weights(path, nn.Linear(4, 3))
    # The digest lives in the file: a stale or missing copy beside it (a run killed between
    # the two writes) does not make intact weights unreadable.
    save_weights(path, module)
    side.write_text("0" * 64 + "  model.safetensors\n")
    load_weights(path, nn.Linear(4, 3))
    side.unlink()
    load_weights(path, nn.Linear(4, 3))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(RunError, match=r"model\.safetensors is corrupted: its SHA-256"):
        load_weights(path, nn.Linear(4, 3))


# -- the command line -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("honest")
    rng = np.random.default_rng(3)
    x = np.stack(
        [1.7e9 + rng.integers(-100, 101, 200), rng.normal(size=200), rng.normal(size=200)], 1
    )
    (root / "data.csv").write_text(
        "big,b,c\n" + "".join(f"{a:.0f},{b:.6f},{c:.6f}\n" for a, b, c in x)
    )
    args = [*TINY_TABLE, "--data", "data.csv", "--flow", "maf", "--steps", "20"]
    args += ["--eval-every", "10", "--n-val", "30", "--n-test", "0.25"]
    proc = run_cli("train", *args, "--out", "run", cwd=root)
    assert_ok(proc)
    (root / "train.out").write_text(proc.stdout + "\n--stderr--\n" + proc.stderr)
    return root


def test_run_records_header_fingerprint_and_splits(table_run: Path) -> None:
    record = json.loads((table_run / "run" / "config.json").read_text())
    data = record["data"]
    assert data["split"] == {"train": 120, "val": 30, "test": 50}
    assert data["source"]["header"] is True and data["source"]["rows"] == 200
    assert data["source"]["columns"] == 3 and len(data["source"]["sha256"]) == 64
    assert data["columns"] == ["big", "b", "c"]


def _score(root: Path, name: str, text: str, *extra: str) -> tuple[int, list[float], str]:
    (root / name).write_text(text)
    proc = run_cli("score", "run", "--input", name, *extra, cwd=root)
    values = [float(v) for v in proc.stdout.split()[1:]] if proc.stdout else []
    return proc.returncode, values, proc.stderr


def test_score_matches_columns_by_name(table_run: Path) -> None:
    rows = [(1.7e9 + 3, 0.1, -0.2), (1.7e9 + 40, 0.1, -0.2), (1.7e9 - 60, 1.0, 0.5)]
    body = "".join(f"{a:.0f},{b},{c}\n" for a, b, c in rows)
    rc, plain, err = _score(table_run, "s.csv", "big,b,c\n" + body)
    assert rc == 0, err
    assert len(plain) == 3 and plain[0] != plain[1]  # float32 in raw units would tie them
    swapped = "".join(f"{c},{a:.0f},{b}\n" for a, b, c in rows)
    rc, values, err = _score(table_run, "w.csv", "c,big,b\n" + swapped)
    assert rc == 0, err
    np.testing.assert_allclose(values, plain, rtol=1e-6)
    # no header: by position
    rc, values, err = _score(table_run, "n.csv", body, "--no-header")
    assert rc == 0, err
    np.testing.assert_allclose(values, plain, rtol=1e-6)


def test_score_refuses_other_and_duplicate_names(table_run: Path) -> None:
    (table_run / "o.csv").write_text("big,b,z\n1700000000,0,0\n")
    proc = run_cli("score", "run", "--input", "o.csv", cwd=table_run)
    assert_bad_input(proc, "missing 'c'", "extra 'z'")
    (table_run / "e.csv").write_text("big,b,c,d\n1700000000,0,0,0\n")
    assert_bad_input(run_cli("score", "run", "--input", "e.csv", cwd=table_run), "extra 'd'")
    (table_run / "d.csv").write_text("big,b,b\n1700000000,0,0\n")
    proc = run_cli("score", "run", "--input", "d.csv", cwd=table_run)
    assert_bad_input(proc, "duplicate column names", "'b' (columns 1 and 2)")


def test_score_flags_non_finite_rows(table_run: Path) -> None:
    text = "big,b,c\n1700000000,0,0\n1700000000,1e300,0\n1700000000,0,0\n"
    rc, values, err = _score(table_run, "f.csv", text)
    assert rc == 1
    assert "1 of 3 rows have a non-finite log-likelihood (data rows 2;" in err
    assert len(values) == 3 and math.isfinite(values[0]) and not math.isfinite(values[1])


def test_flipped_bytes_and_changed_data_are_refused(table_run: Path, tmp_path: Path) -> None:
    assert_ok(run_cli("eval", table_run / "run", cwd=table_run))
    bad = tmp_path / "bad"
    shutil.copytree(table_run / "run", bad)
    weights = bad / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-9] ^= 0x10
    weights.write_bytes(bytes(data))
    for cmd in (("eval", bad), ("score", bad, "--input", table_run / "data.csv")):
        assert_bad_input(run_cli(*cmd, cwd=table_run), "model.safetensors is corrupted")
    # the data file changed: its rows reordered
    copy = tmp_path / "copy"
    shutil.copytree(table_run / "run", copy)
    lines = (table_run / "data.csv").read_text().splitlines()
    changed = tmp_path / "data.csv"
    changed.write_text("\n".join([lines[0], *lines[1:][::-1]]) + "\n")
    record = json.loads((copy / "config.json").read_text())
    record["config"]["data"] = str(changed)
    (copy / "config.json").write_text(json.dumps(record))
    proc = run_cli("eval", copy, cwd=tmp_path)
    assert_bad_input(proc, "changed since the run was trained", "content")


def test_numeric_header_is_recorded(tmp_path: Path) -> None:
    x = np.random.default_rng(4).normal(size=(60, 3))
    _csv(tmp_path / "n.csv", "0,1,2", x)
    args = [*TINY_TABLE, "--data", "n.csv", "--steps", "2", "--eval-every", "1"]
    assert_ok(run_cli("train", *args, "--out", "h", cwd=tmp_path))
    assert_ok(run_cli("train", *args, "--no-header", "--out", "nh", cwd=tmp_path))
    h = json.loads((tmp_path / "h" / "config.json").read_text())["data"]
    nh = json.loads((tmp_path / "nh" / "config.json").read_text())["data"]
    assert h["source"]["header"] is True and h["source"]["rows"] == 60
    assert nh["source"]["header"] is False and nh["source"]["rows"] == 61
    assert_ok(run_cli("eval", "nh", cwd=tmp_path))  # eval re-reads with the recorded choice


# -- the Gaussian baseline --------------------------------------------------------------------


def test_gaussian_baseline_matches_the_closed_form() -> None:
    from flowforge.eval.baseline import gaussian_baseline

    g = torch.Generator().manual_seed(6)
    a = torch.randn(400, 3, generator=g, dtype=torch.float64) @ torch.tensor(
        [[2.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.0, 0.3, 1.0]], dtype=torch.float64
    )
    b = torch.randn(50, 3, generator=g, dtype=torch.float64)
    mean, cov = a.mean(0), torch.cov(a.T, correction=0)
    ref = torch.distributions.MultivariateNormal(mean, cov).log_prob(b)
    s = gaussian_baseline(a, b, log_abs_det=-0.7)
    assert s.n == 50
    assert math.isclose(s.nll, float(-(ref - 0.7).mean()), rel_tol=1e-5)
    const = torch.cat([a, torch.ones(400, 1, dtype=torch.float64)], 1)  # a constant column
    assert math.isfinite(gaussian_baseline(const, const[:10]).nll)


def test_eval_reports_the_gaussian_baseline(table_run: Path) -> None:
    proc = run_cli("eval", "run", "--json", cwd=table_run)
    assert_ok(proc)
    out = json.loads(proc.stdout)
    assert out["gaussian_baseline"]["n"] == out["n"] == 50
    proc = run_cli("eval", "run", cwd=table_run)
    assert_ok(proc)
    assert f"Gaussian baseline {out['gaussian_baseline']['nll']:.4f}" in proc.stdout
    worse = out["nll"] > out["gaussian_baseline"]["nll"] + 1e-3  # rounding of the start is not
    assert ("worse than a full-covariance Gaussian" in proc.stderr) == worse


def test_eval_on_the_validation_rows_says_they_chose_the_baseline(table_run: Path) -> None:
    """``eval --split val`` scores rows that chose the flow's kept step, its mixture weight and
    (30 rows) the start's shrinkage: the baseline's note says so; the test split's does not."""
    proc = run_cli("eval", "run", "--split", "val", cwd=table_run)
    assert_ok(proc)
    assert "scored on the validation rows, which chose" in proc.stdout
    assert "and this shrinkage: both scores are optimistic" in proc.stdout
    proc = run_cli("eval", "run", "--json", cwd=table_run)
    assert "validation rows" not in json.loads(proc.stdout)["gaussian_baseline"]["note"]


def test_train_reports_the_gaussian_baseline(table_run: Path) -> None:
    results = json.loads((table_run / "run" / "results.json").read_text())
    base, test = results["gaussian_baseline"], results["test"]
    assert base["n"] == test["n"] == 50 and math.isfinite(base["nll"])
    out = (table_run / "train.out").read_text()
    assert f"; Gaussian baseline {base['nll']:.4f}" in out
    worse = test["nll"] > base["nll"] + 1e-3  # a model that fell back to the start: rounding
    assert ("worse than a full-covariance Gaussian" in out) == worse
    proc = run_cli("eval", "run", "--json", cwd=table_run)
    assert_ok(proc)  # eval's baseline is the same number
    assert math.isclose(json.loads(proc.stdout)["gaussian_baseline"]["nll"], base["nll"])


def test_test_summary_standardises_in_float64(tmp_path: Path) -> None:
    p = _csv(tmp_path / "big.csv", "big,b", _big_column())
    ds = load_user_file(p)
    assert ds.standardizer is not None
    flow = _flow(ds.standardizer.mean.numpy(), ds.standardizer.std.numpy())
    s = train_run.test_summary(flow, ds, TrainConfig(), "test")
    ll = standardized_log_likelihoods(flow, ds.test, ds.standardizer.log_abs_det())
    assert s.n == ds.test.shape[0] and math.isclose(s.nll, float(-ll.mean()), rel_tol=1e-9)
    with torch.no_grad():  # float32 in raw units, the old path
        raw = flow.log_prob(ds.standardizer.inverse(ds.test)).double()
    assert abs(float(-raw.mean()) - s.nll) > 1e-3
