"""Output files of rows (samples, scores): ``.npy`` or ``.csv``, written atomically."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from flowforge.runs.atomic import atomic_write_bytes, atomic_write_text
from flowforge.runs.errors import RunError

__all__ = ["TABLE_SUFFIXES", "check_output", "write_table"]

TABLE_SUFFIXES = (".npy", ".csv")


def write_table(path: str | os.PathLike[str], x: np.ndarray, header: Sequence[str]) -> Path:
    """Write rows to a ``.npy`` or ``.csv`` file atomically (CSV with a header line).

    Args:
        path: the output file; its suffix chooses the format.
        x: ``(N, ...)`` array (CSV: flattened to ``(N, D)``).
        header: the ``D`` CSV column names.

    Returns:
        The path written.

    Raises:
        RunError: for another suffix or a missing folder.

    Example:
        >>> import tempfile
        >>> p = write_table(Path(tempfile.mkdtemp()) / "s.csv", np.eye(2), ["a", "b"])
        >>> p.read_text().splitlines()
        ['a,b', '1,0', '0,1']
    """
    p = Path(path)
    check_output(p, TABLE_SUFFIXES)
    if p.suffix.lower() == ".npy":
        buf = io.BytesIO()
        np.save(buf, x)
        atomic_write_bytes(p, buf.getvalue())
    else:
        text = io.StringIO()
        rows = x.reshape(x.shape[0], -1)
        np.savetxt(text, rows, delimiter=",", header=",".join(header), comments="", fmt="%.9g")
        atomic_write_text(p, text.getvalue())
    return p


def check_output(path: Path, suffixes: Sequence[str]) -> None:
    """Check that an output file can be written: known suffix and an existing folder.

    Args:
        path: the output file.
        suffixes: the accepted suffixes, lower case with the dot (``(".npy", ".csv")``).

    Raises:
        RunError: naming the problem.
    """
    if path.suffix.lower() not in suffixes:
        raise RunError(
            f"unsupported output type {path.suffix!r} for {path}; use {', '.join(suffixes)}"
        )
    if not path.parent.is_dir():
        raise RunError(f"cannot write {path}: folder {path.parent} does not exist")
