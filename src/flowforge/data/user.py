"""User data from a ``.csv`` or ``.npy`` file.

- CSV: comma-separated (``;`` and tab are detected too). ``header=True`` / ``False`` says
  whether the first row holds column names; by default (``None``) it does when any of its cells
  is not a number, or when it is exactly the column numbers ``0..D-1`` or ``1..D`` written as
  integers with ``D >= 3`` (what pandas writes for an unnamed frame); any other row of numbers
  is data. Header names must be distinct. ``columns=`` picks columns by header name or 0-based
  index; the other columns may hold anything. Every selected cell must be a finite number: the
  first bad one raises :class:`~flowforge.data.DataError` naming its row (1-based, as the
  file's line number, counting the header) and its column.
- NPY: a 2-D numeric array (a 1-D one is one column), read without pickle; ``columns=`` takes
  0-based indices.

The rows are shuffled with ``seed`` and split into train/validation/test (``n_val`` /
``n_test``: counts, or fractions below 1; 10% each by default), then standardised in float64
with the training rows' mean and std and only then cast to float32 (``Dataset.standardizer``;
a constant column keeps std 1). ``Dataset.source`` is the file's fingerprint (rows, columns,
SHA-256, header). Use :func:`read_table` plus ``Dataset.standardizer.transform`` to score new
files the same way.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import DataError, Dataset, fit_standardize, random_split
from .degenerate import check_columns, lone_values

__all__ = ["MIN_ROWS", "check_source", "file_source", "load_user_file", "read_header", "read_table"]

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


def _numbered_header(cells: list[str]) -> bool:
    """Whether an all-numeric row is the column numbers ``0..D-1`` or ``1..D`` (``D >= 3``)."""
    texts = [c.strip() for c in cells]
    if len(texts) < 3 or not all(t.isdigit() for t in texts):
        return False
    values = [int(t) for t in texts]
    return values in (list(range(len(texts))), list(range(1, len(texts) + 1)))


def _is_header(cells: list[str], header: bool | None) -> bool:
    if header is not None:
        return header
    return any(_parse_float(c) is None for c in cells) or _numbered_header(cells)


def _check_distinct(names: list[str], path: Path) -> None:
    seen: dict[str, int] = {}
    dup = []
    for j, n in enumerate(names):
        if n in seen:
            dup.append(f"{n!r} (columns {seen[n]} and {j})")
        seen.setdefault(n, j)
    if dup:
        raise DataError(
            f"{path}: duplicate column names in the header: {', '.join(dup)}; rename them "
            f"(or read the first row as data with --no-header)"
        )


def _read_csv(
    path: Path, columns: Sequence[str | int] | None, header: bool | None
) -> tuple[np.ndarray, list[str], bool]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        delimiter = _sniff_delimiter(f.read(64 * 1024))
        f.seek(0)
        reader = csv.reader(f, delimiter=delimiter)
        first = next((row for row in reader if row), None)
        if first is None:
            raise DataError(f"{path}: the file is empty")
        first_line = reader.line_num
        has_header = _is_header(first, header)
        names = [c.strip() for c in first] if has_header else [str(j) for j in range(len(first))]
        if has_header:
            _check_distinct(names, path)
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
        return np.zeros((0, len(picked))), [names[j] for j in picked], has_header
    return np.asarray(rows, dtype=np.float64), [names[j] for j in picked], has_header


#: The largest magnitude a training value may have: the flows compute in float32 (a table's
#: ``Standardize`` holds its mean and std in float32), where ``1e300`` is ``inf``. (Scoring
#: takes such rows: their log-likelihood is flagged as not finite.)
FLOAT32_MAX = float(np.finfo(np.float32).max)


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


def _read(
    path: str | os.PathLike[str], columns: Sequence[str | int] | None, header: bool | None
) -> tuple[np.ndarray, list[str], bool]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"file not found: {p.absolute()}")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        try:
            return _read_csv(p, columns, header)
        except UnicodeDecodeError as e:
            raise DataError(f"{p}: not UTF-8 text (byte {e.start}); save the CSV as UTF-8") from e
    if suffix == ".npy":
        if header:
            raise DataError(f"{p}: a .npy file has no header row; --header applies to CSV files")
        x, names = _read_npy(p, columns)
        return x, names, False
    raise DataError(f"{p}: unsupported file type {p.suffix!r}; use a .csv or .npy file")


def read_table(
    path: str | os.PathLike[str],
    columns: Sequence[str | int] | None = None,
    header: bool | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Read a user ``.csv`` or ``.npy`` file into a float64 array, validating every value.

    Args:
        path: the file.
        columns: column names (CSV with a header) or 0-based indices; ``None`` for all.
        header: CSV only: whether the first row holds column names (``None``: the rule of
            this module's docstring).

    Returns:
        ``(x, names)``: ``x`` of shape ``(N, D)`` float64 and the ``D`` selected column names
        (the 0-based indices as strings when the file has no header).
    """
    x, names, _ = _read(path, columns, header)
    return x, names


def read_header(path: str | os.PathLike[str], header: bool | None = None) -> list[str] | None:
    """The column names of a CSV file's header row, or ``None`` (no header, or a ``.npy``).

    Raises:
        DataError: a missing or empty file, or duplicate names.
    """
    p = Path(path).expanduser()
    if p.suffix.lower() != ".csv":
        return None
    if not p.is_file():
        raise DataError(f"file not found: {p.absolute()}")
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            delimiter = _sniff_delimiter(f.read(64 * 1024))
            f.seek(0)
            first = next((row for row in csv.reader(f, delimiter=delimiter) if row), None)
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not UTF-8 text (byte {e.start}); save the CSV as UTF-8") from e
    if first is None:
        raise DataError(f"{p}: the file is empty")
    if not _is_header(first, header):
        return None
    names = [c.strip() for c in first]
    _check_distinct(names, p)
    return names


def file_source(path: str | os.PathLike[str], x: np.ndarray, header: bool) -> dict[str, Any]:
    """The fingerprint of a data file as a run stores it.

    Returns:
        ``{"file", "rows", "columns", "sha256", "header"}``: the file's name, the shape of the
        table read from it, the SHA-256 of its bytes, and whether its first row was a header.
    """
    p = Path(path).expanduser()
    digest = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {
        "file": p.name,
        "rows": int(x.shape[0]),
        "columns": int(x.shape[1]),
        "sha256": digest.hexdigest(),
        "header": bool(header),
    }


def check_source(stored: dict[str, Any] | None, current: dict[str, Any] | None, path: str) -> None:
    """Refuse data whose fingerprint differs from the one a run stored.

    Args:
        stored: the run's fingerprint (``None``: a run written before fingerprints; passes).
        current: the fingerprint of the file now.
        path: the file, for the message.

    Raises:
        DataError: naming what changed (rows, columns, header or content).
    """
    if stored is None or current is None:
        return
    changes = [
        f"{k} {stored.get(k)} -> {current.get(k)}"
        for k in ("rows", "columns", "header")
        if stored.get(k) != current.get(k)
    ]
    if not changes and stored.get("sha256") != current.get("sha256"):
        changes.append("content (same shape, other bytes: rows edited or reordered)")
    if changes:
        raise DataError(
            f"{path} changed since the run was trained ({'; '.join(changes)}): its splits are "
            f"no longer the run's, so the numbers would not be comparable (test rows may now "
            f"include training rows); restore the file or train a new run"
        )


def load_user_file(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    columns: Sequence[str | int] | None = None,
    header: bool | None = None,
    n_val: float | None = None,
    n_test: float | None = None,
) -> Dataset:
    """Load a user file, split it by ``seed`` and standardise with the training rows.

    Args:
        path: a ``.csv`` or ``.npy`` file.
        seed: seed of the shuffle before the split.
        columns: columns to use (names or 0-based indices); ``None`` for all.
        header: CSV only: whether the first row is a header (``None``: the module's rule).
        n_val: validation rows, a count or a fraction below 1 (``None``: 10%).
        n_test: test rows, a count or a fraction below 1 (``None``: 10%).

    Returns:
        A ``"tabular"`` :class:`Dataset` named after the file stem, with ``standardizer``,
        ``columns`` and ``source`` (the file's fingerprint) set.
    """
    x, names, has_header = _read(path, columns, header)
    huge = np.abs(x) > FLOAT32_MAX
    if huge.any():
        i, j = (int(k) for k in np.argwhere(huge)[0])
        raise DataError(
            f"{path}, data row {i + 1}, column {names[j]!r}: value {x[i, j]:g} is beyond "
            f"float32's range (|x| <= {FLOAT32_MAX:.3g}), which the flows compute in"
        )
    if x.shape[0] < MIN_ROWS:
        raise DataError(
            f"{path}: only {x.shape[0]} data rows; need at least {MIN_ROWS} to split into "
            f"train/validation/test"
        )
    try:
        train, val, test = random_split(x, seed, n_val, n_test)
    except DataError as e:
        raise DataError(f"{path}: {e}") from None
    check_columns(train, names, str(path))  # constant or repeated columns: refused
    for line in lone_values(x, names, str(path)):  # one value that sets a column's scale
        print(f"flowforge: warning: {line}", file=sys.stderr)
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
        source=file_source(path, x, has_header),
    )
