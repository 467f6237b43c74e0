"""Whether a run directory finished, for every kind of run, and the note of one that did not.

A run is finished when its ``results.json`` exists: :class:`~flowforge.runs.writer.RunWriter`
writes it last, for a ``flowforge train`` run, a ``flowforge vi`` run and a scikit-learn
estimator's run alike. A run killed before that (its process killed, the machine stopped) keeps
what it wrote so far (the record, the best weights so far, the metrics) and evaluates with the
one note of :func:`incomplete`.

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> print(incomplete(root, {"total_steps": 50}, [{"step": 20}]).split(" (")[0])
    incomplete: step 20 of 50
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ESTIMATOR_KIND",
    "SBI_KIND",
    "TRAIN_KIND",
    "VI_KIND",
    "incomplete",
    "is_finished",
    "run_kind",
]

#: The kinds of run (``"task"`` in ``config.json``; a training run has none).
TRAIN_KIND = "train"
VI_KIND = "vi"
SBI_KIND = "sbi"
ESTIMATOR_KIND = "estimator"


def run_kind(record: dict[str, Any]) -> str:
    """``"vi"``, ``"sbi"``, ``"estimator"`` or ``"train"``: which program wrote the run record."""
    if record.get("task") in (VI_KIND, SBI_KIND):
        return str(record["task"])
    if "estimator" in record:
        return ESTIMATOR_KIND
    return TRAIN_KIND


def is_finished(root: str | Path, record: dict[str, Any]) -> bool:
    """Whether the run in ``root`` finished (its ``results.json`` exists).

    An estimator's run written before the run writer (no ``"created"`` in its record) has no
    ``results.json``: it was written in one go, ``config.json`` last, so it is finished.
    """
    if (Path(root) / "results.json").exists():
        return True
    return run_kind(record) == ESTIMATOR_KIND and "created" not in record


def _steps_done(kind: str, records: Sequence[dict[str, Any]]) -> int:
    steps = [
        r["step"]
        for r in records
        if isinstance(r.get("step"), (int, float)) and math.isfinite(r["step"])
    ]
    if not steps:
        return 0
    # a VI run counts its steps from 0 (the record of step s is written after s + 1 steps)
    return int(max(steps)) + (1 if kind == VI_KIND else 0)


def incomplete(
    root: str | Path, record: dict[str, Any], records: Sequence[dict[str, Any]]
) -> str | None:
    """``"incomplete: step N of M (...)"`` for a run that did not finish, else ``None``.

    Args:
        root: the run directory.
        record: its ``config.json`` record (``total_steps``).
        records: its ``metrics.jsonl`` records (``N`` is the last step recorded; 0 if none).
    """
    if is_finished(root, record):
        return None
    kind = run_kind(record)
    step = _steps_done(kind, records)
    total = record.get("total_steps", "?")
    kept = "its weights at that step" if kind == VI_KIND else "its best weights so far"
    if kind == ESTIMATOR_KIND:
        how = "fit the estimator and save it again"
    elif kind == SBI_KIND:
        how = "fit the posterior and save it again"
    else:
        how = f"continue it with flowforge {'vi' if kind == VI_KIND else 'train'} --resume {root}"
    return (
        f"incomplete: step {step} of {total} (the run stopped before it finished; these are "
        f"{kept}; {how})"
    )
