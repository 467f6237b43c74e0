"""Degenerate tables, said rather than hidden (issue 23).

- a **constant column** (one value on every training row) has no density: standardising keeps
  it at std 1 and every NLL then includes an arbitrary point-mass term; refused, naming it;
- a **repeated column** (``--columns a,a``, or two columns equal on every training row) makes
  the rows rank deficient, a degenerate density; refused, naming both;
- **one absurd value** (``1e22`` among values near 1000) sets its column's scale alone: a
  warning names the row and the column.

Rank-deficient rows that are not exact copies (collinear columns, fewer rows than columns) are
modelled, and the Gaussian baseline says so (:mod:`flowforge.eval.baseline`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flowforge.data.base import DataError

__all__ = ["ONE_VALUE_SCALE", "check_columns", "lone_values"]

#: A column's std with every row over its std without its farthest row above which that one
#: row sets the column's scale (with 1000 rows, a value about 3,000 stds of the rest away).
ONE_VALUE_SCALE = 100.0


def check_columns(train: np.ndarray, names: Sequence[str], origin: str) -> None:
    """Refuse a constant column or two equal columns among the training rows.

    Args:
        train: ``(N, D)`` training rows, ``N >= 2``.
        names: the ``D`` column names.
        origin: the file, for the message.

    Raises:
        DataError: one line naming the column(s).

    Example:
        >>> check_columns(np.array([[1.0, 2.0], [2.0, 2.0]]), ["a", "b"], "t.csv")
        Traceback (most recent call last):
        ...
        flowforge.data.base.DataError: t.csv: column 'b' is constant (2 on every training row): a point mass has no density, so every log-likelihood would be arbitrary; leave it out (--columns)
    """
    if train.shape[0] < 2:
        return
    for j in range(train.shape[1]):
        col = train[:, j]
        if bool((col == col[0]).all()):
            raise DataError(
                f"{origin}: column {names[j]!r} is constant ({col[0]:g} on every training "
                "row): a point mass has no density, so every log-likelihood would be "
                "arbitrary; leave it out (--columns)"
            )
    # equal columns: compare each column's fingerprint first, then the values
    keys: dict[bytes, int] = {}
    for j in range(train.shape[1]):
        key = np.ascontiguousarray(train[:, j]).tobytes()
        if key in keys:
            i = keys[key]
            raise DataError(
                f"{origin}: columns {i + 1} and {j + 1} ({names[i]!r} and {names[j]!r}) are "
                "equal on every training row: the rows lie on a plane, a degenerate density; "
                "give each column once"
            )
        keys[key] = j


def lone_values(x: np.ndarray, names: Sequence[str], origin: str) -> list[str]:
    """One warning per column whose scale one value sets (see :data:`ONE_VALUE_SCALE`).

    Args:
        x: ``(N, D)`` rows of the file, in its order.
        names: the ``D`` column names.
        origin: the file, for the message.

    Returns:
        One line per such column, naming the row (1-based, data rows) and the column.

    Example:
        >>> x = np.c_[np.linspace(990.0, 1010.0, 999).tolist() + [1e22]]
        >>> print(lone_values(x, ["income"], "t.csv")[0][:56])
        t.csv, row 1000, column 'income': value 1e+22 alone sets
    """
    out: list[str] = []
    n = x.shape[0]
    if n < 3:
        return out
    for j in range(x.shape[1]):
        col = x[:, j].astype(np.float64)
        med = np.median(col)
        i = int(np.argmax(np.abs(col - med)))
        rest = np.delete(col, i)
        s_all, s_rest = float(col.std()), float(rest.std())
        if s_rest > 0 and s_all > ONE_VALUE_SCALE * s_rest:
            out.append(
                f"{origin}, row {i + 1}, column {names[j]!r}: value {col[i]:g} alone sets the "
                f"column's scale to {s_all:.3g} (the other rows: {rest.mean():.6g} ± "
                f"{s_rest:.3g}); check it"
            )
    return out
