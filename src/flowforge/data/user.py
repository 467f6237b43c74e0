"""User data from a ``.csv`` or ``.npy`` file.

- CSV: comma-separated (``;`` and tab are detected too); a header is present when the first row
  is not all numeric. ``columns=`` picks columns by header name or 0-based index; the other
  columns may hold anything. Every selected cell must be a finite number: the first bad one
  raises :class:`~flowforge.data.DataError` naming its row (1-based, as the file's line number,
  counting the header) and its column.
- NPY: a 2-D numeric array (a 1-D one is one column), read without pickle; ``columns=`` takes
  0-based indices.

The rows are shuffled with ``seed`` and split 80/10/10 into train/validation/test, then
standardised with the training rows' mean and std (``Dataset.standardizer``; a constant column
keeps std 1). Use :func:`read_table` plus ``Dataset.standardizer.transform`` to score new files
the same way.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .base import DataError, Dataset, fit_standardize, random_split

__all__ = ["MIN_ROWS", "load_user_file", "read_table"]

#: Fewest rows a user file may have (so that each split gets at least one row).
MIN_ROWS = 10


def _parse_float(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _resolve_columns(
    columns: Sequence[str | int] | None, names: list[str], has_header: bool, path: Path
) -> list[int]:
    if columns is None:
        return list(range(len(names)))
    if len(columns) == 0:
        raise DataError(f"{path}: columns= is empty; give names or 0-based indices")
    out = []
    for c in columns:
        if isinstance(c, str) and has_header and c in names:
            out.append(names.index(c))
            continue
        idx = c if isinstance(c, int) else (int(c) if c.strip().lstrip("-").isdigit() else None)
        if idx is None or not -len(names) <= idx < len(names):
            valid = ", ".join(repr(n) for n in names) if has_header else f"0..{len(names) - 1}"
            raise DataError(f"{path}: no column {c!r}; the file's columns are {valid}")
        out.append(idx % len(names))
    return out


def _describe_column(j: int, names: list[str], has_header: bool) -> str:
    return f"column {names[j]!r} (index {j})" if has_header else f"column index {j}"


def _sniff_delimiter(sample: str) -> str:
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t").delimiter
    except csv.Error:
        return ","


def _read_csv(path: Path, columns: Sequence[str | int] | None) -> tuple[np.ndarray, list[str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        delimiter = _sniff_delimiter(f.read(64 * 1024))
        f.seek(0)
        reader = csv.reader(f, delimiter=delimiter)
        first = next((row for row in reader if row), None)
        if first is None:
            raise DataError(f"{path}: the file is empty")
        first_line = reader.line_num
        has_header = any(_parse_float(c) is None for c in first)
        names = [c.strip() for c in first] if has_header else [str(j) for j in range(len(first))]
        picked = _resolve_columns(columns, names, has_header, path)
        rows: list[list[float]] = []

        def numbered() -> Iterator[tuple[int, list[str]]]:
            if not has_header:
                yield first_line, first
            for r in reader:
                yield reader.line_num, r

        for line, row in numbered():
            if not row:
                continue
            if len(row) != len(names):
                raise DataError(f"{path}, row {line}: {len(row)} fields, expected {len(names)}")
            values = []
            for j in picked:
                v = _parse_float(row[j])
                if v is None or not math.isfinite(v):
                    what = "is not a number" if v is None else "is not finite (NaN/inf not allowed)"
                    raise DataError(
                        f"{path}, row {line}, {_describe_column(j, names, has_header)}: "
                        f"{row[j].strip()!r} {what}"
                    )
                values.append(v)
            rows.append(values)
    if not rows:
        return np.zeros((0, len(picked))), [names[j] for j in picked]
    return np.asarray(rows, dtype=np.float64), [names[j] for j in picked]


def _read_npy(path: Path, columns: Sequence[str | int] | None) -> tuple[np.ndarray, list[str]]:
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(
            f"{path}: not a plain numeric .npy array ({' '.join(str(e).split())})"
        ) from e
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise DataError(f"{path}: expected a 2-D array (rows, columns), got shape {x.shape}")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{path}: expected a numeric array, got dtype {x.dtype}")
    names = [str(j) for j in range(x.shape[1])]
    picked = _resolve_columns(columns, names, False, path)
    x = np.asarray(x[:, picked], dtype=np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        raise DataError(
            f"{path}, row {i + 1}, column index {picked[j]}: value {x[i, j]} is not finite "
            f"(NaN/inf not allowed)"
        )
    return x, [names[j] for j in picked]


def read_table(
    path: str | os.PathLike[str], columns: Sequence[str | int] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Read a user ``.csv`` or ``.npy`` file into a float64 array, validating every value.

    Args:
        path: the file.
        columns: column names (CSV with a header) or 0-based indices; ``None`` for all.

    Returns:
        ``(x, names)``: ``x`` of shape ``(N, D)`` float64 and the ``D`` selected column names
        (the 0-based indices as strings when the file has no header).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"file not found: {p.absolute()}")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        try:
            return _read_csv(p, columns)
        except UnicodeDecodeError as e:
            raise DataError(f"{p}: not UTF-8 text (byte {e.start}); save the CSV as UTF-8") from e
    if suffix == ".npy":
        return _read_npy(p, columns)
    raise DataError(f"{p}: unsupported file type {p.suffix!r}; use a .csv or .npy file")


def load_user_file(
    path: str | os.PathLike[str], *, seed: int = 0, columns: Sequence[str | int] | None = None
) -> Dataset:
    """Load a user file, split it 80/10/10 by ``seed`` and standardise with the training rows.

    Args:
        path: a ``.csv`` or ``.npy`` file.
        seed: seed of the shuffle before the split.
        columns: columns to use (names or 0-based indices); ``None`` for all.

    Returns:
        A ``"tabular"`` :class:`Dataset` named after the file stem, with ``standardizer`` and
        ``columns`` set.
    """
    x, names = read_table(path, columns)
    if x.shape[0] < MIN_ROWS:
        raise DataError(
            f"{path}: only {x.shape[0]} data rows; need at least {MIN_ROWS} to split into "
            f"train/validation/test"
        )
    train, val, test = random_split(x, seed)
    std, (t_train, t_val, t_test) = fit_standardize(train, val, test)
    return Dataset(
        name=Path(path).stem,
        kind="tabular",
        event_shape=(x.shape[1],),
        train=t_train,
        val=t_val,
        test=t_test,
        standardizer=std,
        columns=names,
    )
