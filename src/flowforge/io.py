"""Run directories: what ``flowforge train`` writes and :func:`load` reads back.

A run directory holds ``config.json`` (the options, the flow's recipe, the data's
standardisation, versions), ``model.safetensors`` (the weights), ``checkpoint.safetensors``
(the full training state, for ``--resume``), ``metrics.jsonl``, ``results.json`` and plots.
Reading a run parses JSON and safetensors only: it never executes code from the files.

Example (after ``flowforge train --out runs/demo``)::

    import flowforge as ff
    flow = ff.load("runs/demo")          # a flowforge.Flow, in evaluation mode
    flow.log_prob(torch.zeros(1, 2))     # log-density in the data's own units
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowforge.core import Flow
from flowforge.train.atomic import atomic_write_bytes, atomic_write_text
from flowforge.train.checkpoint import RunError, load_weights
from flowforge.train.config import ConfigError, TrainConfig
from flowforge.train.model import ModelSpec, build_flow

__all__ = [
    "RUN_FORMAT",
    "Run",
    "RunError",
    "check_output",
    "load",
    "open_run",
    "run_files",
    "write_table",
]

RUN_FORMAT = "flowforge-run"


@dataclass(frozen=True)
class RunFiles:
    """The paths of a run directory's files."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def weights(self) -> Path:
        return self.root / "model.safetensors"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.safetensors"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def results(self) -> Path:
        return self.root / "results.json"


def run_files(path: str | os.PathLike[str]) -> RunFiles:
    """The file layout of the run directory ``path`` (nothing is read)."""
    return RunFiles(Path(path))


@dataclass
class Run:
    """A trained run, opened.

    Attributes:
        files: the run's paths.
        config: the training options.
        spec: the flow's recipe.
        record: the whole ``config.json`` (data description, step count, versions).
        flow: the trained flow, in evaluation mode.
    """

    files: RunFiles
    config: TrainConfig
    spec: ModelSpec
    record: dict[str, Any]
    flow: Flow


def read_run_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a run's ``config.json``.

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
    return record


def parse_run_record(record: dict[str, Any], origin: str) -> tuple[TrainConfig, ModelSpec]:
    """The options and the flow recipe of a run record.

    Raises:
        RunError: if either part is missing or malformed.
    """
    try:
        cfg = TrainConfig.from_dict(record["config"])
        spec = ModelSpec.from_dict(record["model"])
    except (KeyError, TypeError, ValueError) as e:
        msg = str(e) if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}"
        raise RunError(f"{origin} has a malformed run record ({msg})") from None
    return cfg, spec


def open_run(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Run:
    """Open a run directory: read its record and rebuild the trained flow.

    Args:
        path: the run directory.
        device: where to put the flow.

    Raises:
        RunError: if anything is missing, corrupted, foreign, or does not fit together.
    """
    files = run_files(path)
    record = read_run_record(files.root)
    cfg, spec = parse_run_record(record, str(files.config))
    try:
        flow = build_flow(spec)
    except ConfigError as e:
        raise RunError(f"{files.config}: {e}") from None
    load_weights(files.weights, flow)
    flow.to(device).eval()
    return Run(files, cfg, spec, record, flow)


def load(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Flow:
    """The trained flow of a run directory, in evaluation mode.

    The flow is a :class:`flowforge.Flow` over the data in its original units: user and
    scikit-learn tabular data unstandardised (the run's training statistics are inside the
    flow), images as flattened values in ``[0, 1)`` (dequantized pixels; the logit
    pre-transform is inside the flow).

    Args:
        path: a run directory written by ``flowforge train``.
        device: where to put the flow.

    Raises:
        RunError: if the run is missing, corrupted or not a flowforge run.
    """
    return open_run(path, device).flow


TABLE_SUFFIXES = (".npy", ".csv")


def write_table(path: str | os.PathLike[str], x: np.ndarray, header: Sequence[str]) -> Path:
    """Write rows to a ``.npy`` or ``.csv`` file atomically (CSV with a header line).

    Args:
        path: the output file; its suffix chooses the format.
        x: ``(N, ...)`` array (CSV: flattened to ``(N, D)``).
        header: the ``D`` CSV column names.

    Raises:
        RunError: for another suffix or a missing folder.
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

    Raises:
        RunError: naming the problem.
    """
    if path.suffix.lower() not in suffixes:
        raise RunError(
            f"unsupported output type {path.suffix!r} for {path}; use {', '.join(suffixes)}"
        )
    if not path.parent.is_dir():
        raise RunError(f"cannot write {path}: folder {path.parent} does not exist")
