"""Pre-simulated ``(theta, x)`` pairs from the user's own simulator, read from a file.

- NPZ: arrays ``theta`` ``(N, D)`` and ``x`` ``(N, *X)`` (read without pickle);
- CSV: a header row of names (or none: columns are numbered from 0); ``theta_cols`` and
  ``x_cols`` pick the parameter and observation columns by name or 0-based index; the header
  rule is :func:`flowforge.data.user.read_header`'s; empty cells and ``nan`` read as NaN;
- NPY: a 2-D numeric array; ``theta_cols`` and ``x_cols`` are 0-based indices.

Rows with a NaN or infinite value (failed simulations) are kept here; the fit drops and counts
them (:func:`flowforge.sbi.check_pairs`). Every other problem is a one-line
:class:`~flowforge.data.DataError` naming the file and what was expected.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from flowforge.data.base import DataError
from flowforge.data.user import read_header

__all__ = ["Simulations", "read_simulations"]


class Simulations:
    """Pairs read from a file: ``theta`` ``(N, D)``, ``x`` ``(N, *X)`` (float64 arrays) and the
    column names (``theta_names``, ``x_names``; numbered for NPZ arrays)."""

    def __init__(
        self, theta: np.ndarray, x: np.ndarray, theta_names: list[str], x_names: list[str]
    ) -> None:
        self.theta, self.x = theta, x
        self.theta_names, self.x_names = theta_names, x_names


def _columns(
    spec: Sequence[str | int] | None, names: list[str], what: str, path: Path
) -> list[int]:
    if not spec:
        raise DataError(
            f"{path}: name the {what} columns (--{what}-cols, names or 0-based indices); the "
            f"file's columns are {', '.join(names[:20])}"
        )
    out = []
    for c in spec:
        key = str(c).strip()
        if key in names:
            out.append(names.index(key))
        elif key.isdigit() and int(key) < len(names):
            out.append(int(key))
        else:
            raise DataError(
                f"{path}: no {what} column {key!r}; the file's columns are {', '.join(names[:20])}"
            )
    return out


def _read_csv(path: Path) -> tuple[np.ndarray, list[str]]:
    header = read_header(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        sample = f.read(64 * 1024)
        f.seek(0)
        delimiter = max(",;\t", key=sample.count)
        rows = [r for r in csv.reader(f, delimiter=delimiter) if r]
    if header is not None:
        rows = rows[1:]
    width = len(header) if header is not None else (len(rows[0]) if rows else 0)
    names = header if header is not None else [str(j) for j in range(width)]
    values = np.empty((len(rows), width))
    line0 = 2 if header is not None else 1
    for i, row in enumerate(rows):
        if len(row) != width:
            raise DataError(f"{path}, row {i + line0}: {len(row)} fields, expected {width}")
        for j, cell in enumerate(row):
            text = cell.strip()
            try:
                values[i, j] = float(text) if text else np.nan
            except ValueError:
                raise DataError(
                    f"{path}, row {i + line0}, column {names[j]!r}: {text!r} is not a number"
                ) from None
    return values, names


def read_simulations(
    path: str | os.PathLike[str],
    theta_cols: Sequence[str | int] | None = None,
    x_cols: Sequence[str | int] | None = None,
) -> Simulations:
    """Read pre-simulated pairs from a ``.npz``, ``.csv`` or ``.npy`` file.

    Args:
        path: the file.
        theta_cols: CSV / NPY: the parameter columns (names or 0-based indices), in order.
        x_cols: CSV / NPY: the observation columns.

    Raises:
        DataError: a missing or unreadable file, missing arrays or columns, wrong shapes,
            mismatched row counts, non-numeric values (one line each).

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "sims.csv"
        >>> _ = f.write_text("a,b,x1\\n0.1,0.2,0.3\\n0.4,0.5,nan\\n")
        >>> s = read_simulations(f, ["a", "b"], ["x1"])
        >>> s.theta.shape, s.x.shape, s.theta_names
        ((2, 2), (2, 1), ['a', 'b'])
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"file not found: {p.absolute()}")
    suffix = p.suffix.lower()
    if suffix == ".npz":
        if theta_cols or x_cols:
            raise DataError(
                f"{p}: an .npz file holds arrays 'theta' and 'x'; columns apply to CSV/NPY"
            )
        try:
            with np.load(p, allow_pickle=False) as z:
                missing = [k for k in ("theta", "x") if k not in z.files]
                if missing:
                    raise DataError(
                        f"{p}: expected arrays 'theta' (N, D) and 'x' (N, *X), found "
                        f"{', '.join(z.files) or 'none'}"
                    )
                theta, x = np.asarray(z["theta"]), np.asarray(z["x"])
        except (ValueError, OSError) as e:
            raise DataError(f"{p}: not a readable .npz file ({' '.join(str(e).split())})") from None
        if theta.ndim == 1:
            theta = theta[:, None]
        if x.ndim == 1:
            x = x[:, None]
        if theta.ndim != 2 or x.ndim < 2 or theta.shape[0] != x.shape[0]:
            raise DataError(
                f"{p}: expected theta (N, D) and x (N, *X) with the same N, got "
                f"{theta.shape} and {x.shape}"
            )
        for name, a in (("theta", theta), ("x", x)):
            if a.dtype.kind not in "biuf":
                raise DataError(f"{p}: expected a numeric array {name}, got dtype {a.dtype}")
        return Simulations(
            theta.astype(np.float64),
            x.astype(np.float64),
            [f"theta_{j}" for j in range(theta.shape[1])],
            [f"x_{j}" for j in range(int(np.prod(x.shape[1:])))],
        )
    if suffix == ".csv":
        try:
            values, names = _read_csv(p)
        except UnicodeDecodeError as e:
            raise DataError(
                f"{p}: not UTF-8 text (byte {e.start}); save the CSV as UTF-8"
            ) from None
    elif suffix == ".npy":
        try:
            values = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DataError(
                f"{p}: not a plain numeric .npy array ({' '.join(str(e).split())})"
            ) from None
        if values.ndim != 2 or values.dtype.kind not in "biuf":
            raise DataError(
                f"{p}: expected a 2-D numeric array (rows, columns), got {values.shape} {values.dtype}"
            )
        values = values.astype(np.float64)
        names = [str(j) for j in range(values.shape[1])]
    else:
        raise DataError(f"{p}: unsupported file type {p.suffix!r}; use .npz, .csv or .npy")
    if len(values) == 0:
        raise DataError(f"{p}: the file has no rows")
    ti = _columns(theta_cols, names, "theta", p)
    xi = _columns(x_cols, names, "x", p)
    both = sorted(set(ti) & set(xi))
    if both:
        raise DataError(f"{p}: column {names[both[0]]!r} is both a theta and an x column")
    return Simulations(values[:, ti], values[:, xi], [names[j] for j in ti], [names[j] for j in xi])
