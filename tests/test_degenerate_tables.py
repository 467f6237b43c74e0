"""Degenerate tables said, not hidden (issue 23): a rank-deficient baseline says so and uses the
start's shrinkage; constant and repeated columns are refused in one line; one absurd value is
named by row and column."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from flowforge.data import DataError, load_dataset
from flowforge.eval.baseline import gaussian_baseline


def _csv(path: Path, x: np.ndarray, names: str) -> Path:
    np.savetxt(path, x, delimiter=",", header=names, comments="")
    return path


def test_baseline_of_rank_deficient_rows_uses_the_start_shrinkage_and_says_so() -> None:
    g = torch.Generator().manual_seed(0)
    low = torch.randn(30, 4, generator=g, dtype=torch.float64)
    train = low @ torch.randn(4, 50, generator=g, dtype=torch.float64)  # 30 rows x 50 columns
    test = torch.randn(10, 50, generator=g, dtype=torch.float64)  # off the rows' subspace
    base = gaussian_baseline(train, test)
    assert base.note is not None and "rank deficient" in base.note and "Ledoit-Wolf" in base.note
    assert math.isfinite(base.nll) and base.nll < 1e4  # the ridge alone: ~1e8 nats
    assert "rank deficient" in base.to_dict()["note"]


def test_baseline_of_full_rank_rows_is_the_maximum_likelihood_gaussian() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 3)) @ np.array([[1.0, 0.6, 0.0], [0.0, 1.0, 0.4], [0.0, 0.0, 1.0]])
    b = rng.normal(size=(40, 3))
    base = gaussian_baseline(torch.from_numpy(a), torch.from_numpy(b))
    cov = np.cov(a.T, bias=True) + 1e-6 * np.eye(3)  # numpy, apart from the code under test
    r = b - a.mean(0)
    ll = -0.5 * (np.einsum("ij,ij->i", r @ np.linalg.inv(cov), r) + np.linalg.slogdet(cov)[1])
    assert base.note is None and base.suffix() == ""
    assert base.nll == pytest.approx(-(ll - 1.5 * math.log(2 * math.pi)).mean(), rel=1e-9)


def test_constant_and_repeated_columns_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 2))
    const = _csv(tmp_path / "const.csv", np.c_[x, np.full(40, 3.0)], "a,b,k")
    with pytest.raises(DataError, match=r"column 'k' is constant \(3 on every training row\)"):
        load_dataset(const)
    assert load_dataset(const, columns=["a", "b"]).dim == 2  # the fix the message names
    plain = _csv(tmp_path / "plain.csv", x, "a,b")
    with pytest.raises(DataError, match=r"columns 1 and 2 \('a' and 'a'\) are equal"):
        load_dataset(plain, columns=["a", "a"])
    with pytest.raises(DataError, match="equal on every training row"):
        load_dataset(_csv(tmp_path / "copy.csv", np.c_[x, x[:, 0]], "a,b,c"))


def test_cli_refuses_a_repeated_column_in_one_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from flowforge.cli import main

    data = _csv(tmp_path / "t.csv", np.random.default_rng(3).normal(size=(40, 2)), "a,b")
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--columns", "a,a", "--out", str(out), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'a' and 'a'" in err[0] and not out.exists()


def test_one_absurd_value_is_named_by_row_and_column(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    x = 1000 + np.random.default_rng(4).normal(size=(1000, 2))
    x[17, 1] = 1e22
    load_dataset(_csv(tmp_path / "t.csv", x, "a,income"))
    err = capsys.readouterr().err
    assert "row 18, column 'income': value 1e+22 alone sets the column's scale" in err
    assert err.count("warning") == 1  # column 'a' is fine
    x[17, 1] = 1010.0  # a large but ordinary value: no warning
    load_dataset(_csv(tmp_path / "u.csv", x, "a,income"))
    assert "warning" not in capsys.readouterr().err
