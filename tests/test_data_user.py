"""User .csv / .npy files: header detection, column selection, validation messages, splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flowforge.data import DataError, load_dataset, read_table


def _write_csv(
    path: Path, rows: list[list[object]], header: list[str] | None = None, sep: str = ","
) -> Path:
    lines = [sep.join(header)] if header else []
    lines += [sep.join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _numeric_rows(n: int = 50, d: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) * [1.0, 10.0, 0.1] + [0.0, 5.0, -2.0]


def test_csv_with_header_split_and_standardised(tmp_path: Path) -> None:
    x = _numeric_rows()
    path = _write_csv(
        tmp_path / "my data.csv", [[repr(float(v)) for v in r] for r in x], ["a", "b", "c"]
    )
    ds = load_dataset(str(path), seed=1)
    assert ds.name == "my data" and ds.kind == "tabular" and ds.event_shape == (3,)
    assert ds.columns == ["a", "b", "c"]
    assert ds.train is not None and ds.standardizer is not None
    assert (ds.train.shape[0], ds.val.shape[0], ds.test.shape[0]) == (40, 5, 5)
    train = ds.train.double()
    torch.testing.assert_close(
        train.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        train.std(0, unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-6, rtol=0
    )
    # all rows are there, and the standardizer undoes the standardisation
    raw = ds.standardizer.inverse(torch.cat([ds.train, ds.val, ds.test]).double()).numpy()
    np.testing.assert_allclose(np.sort(raw, axis=0), np.sort(x, axis=0), rtol=1e-5, atol=1e-5)
    # deterministic split given the seed
    assert torch.equal(load_dataset(path, seed=1).test, ds.test)
    assert not torch.equal(load_dataset(path, seed=2).test, ds.test)


def test_csv_without_header_and_column_selection(tmp_path: Path) -> None:
    x = _numeric_rows()
    path = _write_csv(tmp_path / "noheader.csv", [list(r) for r in x])
    table, names = read_table(path)
    assert names == ["0", "1", "2"] and table.shape == (50, 3)
    np.testing.assert_allclose(table, x)
    ds = load_dataset(str(path), columns=["2", "0"])
    assert ds.event_shape == (2,) and ds.columns == ["2", "0"]
    assert ds.standardizer is not None
    np.testing.assert_allclose(ds.standardizer.mean.numpy(), x[:, [2, 0]].mean(0), atol=0.5)


def test_csv_columns_by_name_skip_text_columns(tmp_path: Path) -> None:
    rows = [[f"id{i}", i * 1.5, "x" if i % 2 else "y", -i] for i in range(20)]
    path = _write_csv(tmp_path / "mixed.csv", rows, ["id", "value", "cat", "neg"])
    table, names = read_table(path, columns=["neg", 1])
    assert names == ["neg", "value"]
    np.testing.assert_array_equal(table[:, 0], -np.arange(20))
    np.testing.assert_array_equal(table[:, 1], np.arange(20) * 1.5)
    with pytest.raises(DataError, match=r"row 2, column 'id' \(index 0\): 'id0' is not a number"):
        load_dataset(path)
    with pytest.raises(
        DataError, match=r"no column 'missing'; the file's columns are 'id', 'value'"
    ):
        read_table(path, columns=["missing"])
    with pytest.raises(DataError, match="no column 7"):
        read_table(path, columns=[7])


def test_semicolon_and_tab_delimiters(tmp_path: Path) -> None:
    x = _numeric_rows(n=12)
    for sep, name in ((";", "semi.csv"), ("\t", "tab.csv")):
        path = _write_csv(tmp_path / name, [list(r) for r in x], ["a", "b", "c"], sep=sep)
        table, names = read_table(path)
        assert names == ["a", "b", "c"]
        np.testing.assert_allclose(table, x)


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("abc", r"row 5, column 'b' \(index 1\): 'abc' is not a number"),
        ("", r"row 5, column 'b' \(index 1\): '' is not a number"),
        ("nan", r"row 5, column 'b' \(index 1\): 'nan' is not finite"),
        ("-inf", r"row 5, column 'b' \(index 1\): '-inf' is not finite"),
    ],
)
def test_bad_csv_cells_name_row_and_column(tmp_path: Path, cell: str, message: str) -> None:
    rows: list[list[object]] = [[i, i + 0.5, 2 * i] for i in range(20)]
    rows[3][1] = cell  # data row 4 = file line 5 (the header is line 1)
    path = _write_csv(tmp_path / "bad.csv", rows, ["a", "b", "c"])
    with pytest.raises(DataError, match=message) as info:
        load_dataset(path)
    assert "\n" not in str(info.value)


def test_bad_cell_without_header_and_ragged_rows(tmp_path: Path) -> None:
    rows: list[list[object]] = [[i, i + 0.5] for i in range(20)]
    rows[6][0] = "?"
    path = _write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError, match=r"row 7, column index 0: '\?' is not a number"):
        load_dataset(path)
    path.write_text("a,b\n1,2\n3\n")
    with pytest.raises(DataError, match="row 3: 1 fields, expected 2"):
        read_table(path)


def test_too_few_rows_and_empty_file(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "small.csv", [[i, i] for i in range(9)], ["a", "b"])
    with pytest.raises(DataError, match="only 9 data rows; need at least 10"):
        load_dataset(path)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_dataset(tmp_path / "empty.csv")
    ok = load_dataset(_write_csv(tmp_path / "ten.csv", [[i, i * i] for i in range(10)], ["a", "b"]))
    assert ok.train is not None and (ok.train.shape[0], ok.val.shape[0], ok.test.shape[0]) == (
        8,
        1,
        1,
    )


def test_constant_column_is_refused(tmp_path: Path) -> None:
    # a point mass has no density (issue 23); the Standardizer itself keeps std 1 for it
    path = _write_csv(tmp_path / "const.csv", [[i, 3.0] for i in range(30)], ["a", "b"])
    with pytest.raises(DataError, match="column 'b' is constant"):
        load_dataset(path)


def test_npy_files(tmp_path: Path) -> None:
    x = _numeric_rows(n=30)
    np.save(tmp_path / "arr.npy", x)
    ds = load_dataset(tmp_path / "arr.npy", columns=[0, 2])
    assert ds.name == "arr" and ds.event_shape == (2,) and ds.columns == ["0", "2"]
    np.save(tmp_path / "vec.npy", np.arange(20.0))
    assert load_dataset(str(tmp_path / "vec.npy")).event_shape == (1,)
    bad = x.copy()
    bad[11, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(DataError, match=r"row 12, column index 1: value nan is not finite"):
        load_dataset(tmp_path / "nan.npy")
    np.save(tmp_path / "cube.npy", np.zeros((10, 2, 2)))
    with pytest.raises(DataError, match="2-D"):
        load_dataset(tmp_path / "cube.npy")
    np.save(tmp_path / "text.npy", np.array(["a", "b"] * 10))
    with pytest.raises(DataError, match="numeric"):
        load_dataset(tmp_path / "text.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}] * 10, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="not a plain numeric"):
        load_dataset(tmp_path / "obj.npy")


def test_missing_and_unsupported_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"file not found: .*nothere\.csv"):
        load_dataset(tmp_path / "nothere.csv")
    (tmp_path / "latin.csv").write_bytes("caf\xe9,b\n1,2\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8 text"):
        load_dataset(tmp_path / "latin.csv")
    (tmp_path / "data.txt").write_text("1,2\n")
    with pytest.raises(DataError, match=r"unsupported file type '\.txt'"):
        load_dataset(tmp_path / "data.txt")
