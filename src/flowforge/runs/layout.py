"""The file layout of a run directory and its record, ``config.json``.

A run directory holds ``config.json`` (the options, the flow's recipe, the data's
standardisation, versions), ``model.safetensors`` (the weights), ``checkpoint.safetensors``
(the full training state, for ``--resume``), ``metrics.jsonl``, ``results.json`` and plots.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowforge.runs.errors import RunError

__all__ = ["RUN_FORMAT", "RUN_FORMAT_VERSION", "RunFiles", "read_run_record", "run_files"]

RUN_FORMAT = "flowforge-run"

#: The version of the run directory layout this flowforge writes (``format_version`` in
#: ``config.json``). 2: image flows take ``(N, C, H, W)`` batches (format 1 flattened them to
#: ``(N, D)``; its image runs are refused, its other runs read as before); the checkpoint may
#: hold an exponential moving average of the weights.
RUN_FORMAT_VERSION = 2


@dataclass(frozen=True)
class RunFiles:
    """The paths of a run directory's files.

    Example:
        >>> run_files("runs/demo").weights.as_posix()
        'runs/demo/model.safetensors'
    """

    root: Path

    @property
    def config(self) -> Path:
        """``config.json``: the run record."""
        return self.root / "config.json"

    @property
    def weights(self) -> Path:
        """``model.safetensors``: the best (at the end: the final) weights."""
        return self.root / "model.safetensors"

    @property
    def checkpoint(self) -> Path:
        """``checkpoint.safetensors``: the whole training state, for ``--resume``."""
        return self.root / "checkpoint.safetensors"

    @property
    def metrics(self) -> Path:
        """``metrics.jsonl``: one JSON record per evaluation."""
        return self.root / "metrics.jsonl"

    @property
    def results(self) -> Path:
        """``results.json``: the test NLL and how the fit ended."""
        return self.root / "results.json"


def run_files(path: str | os.PathLike[str]) -> RunFiles:
    """The file layout of the run directory ``path`` (nothing is read)."""
    return RunFiles(Path(path))


def read_run_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a run's ``config.json``.

    Args:
        path: the run directory.

    Returns:
        The whole record (``format``, ``config``, ``model``, ``data``, ``total_steps``, ...).

    Raises:
        RunError: if the folder or file is missing or the file is not a flowforge run record.
    """
    files = run_files(path)
    if not files.root.is_dir():
        raise RunError(f"no run directory at {files.root}")
    try:
        record = json.loads(files.config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{files.root} is not a run directory: config.json is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{files.config} is corrupted: not valid JSON ({e})") from None
    if not isinstance(record, dict) or record.get("format") != RUN_FORMAT:
        raise RunError(f"{files.config} is not a flowforge run record (no format {RUN_FORMAT!r})")
    version = record.get("format_version", 1)
    if not isinstance(version, int) or version > RUN_FORMAT_VERSION:
        raise RunError(
            f"{files.config} has run format version {version!r}; this flowforge reads versions "
            f"up to {RUN_FORMAT_VERSION}: upgrade flowforge"
        )
    model = record.get("model")
    if version < 2 and isinstance(model, dict) and model.get("kind") == "image":
        raise RunError(
            f"{files.config} is an image run of run format 1, whose flow took flattened (N, D) "
            f"rows; this flowforge (format {RUN_FORMAT_VERSION}) builds image flows on "
            f"(N, C, H, W) batches, so the run cannot be read: train it again"
        )
    return record
