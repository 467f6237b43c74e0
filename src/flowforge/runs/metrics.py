"""``metrics.jsonl``: one JSON object per evaluation, appended as training goes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flowforge.runs.atomic import atomic_write_text

__all__ = ["MetricsLog"]


class MetricsLog:
    """Append-only evaluation records with the keys ``step``, ``train_loss``, ``val_nll``,
    ``lr``, ``seconds`` (and a few more).

    A run killed between two checkpoints may leave records (or half a line) past the last
    checkpoint; :meth:`truncate` drops them when the run resumes, so the file of a resumed run
    equals that of an uninterrupted one up to the wall-clock times.

    Args:
        path: the ``metrics.jsonl`` file (created on the first append).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        """Add one record as a line and flush it to disk."""
        self.extend([record])

    def extend(self, records: Iterable[dict[str, Any]]) -> None:
        """Add records as lines with one flush and fsync (a torn last line is skipped on
        reading)."""
        with self.path.open("a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict[str, Any]]:
        """Every complete record, in order (a torn last line is skipped)."""
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
        return records

    def truncate(self, step: int) -> None:
        """Keep only the records with ``step <= step`` (rewritten atomically)."""
        kept = [r for r in self.read() if int(r.get("step", 0)) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
