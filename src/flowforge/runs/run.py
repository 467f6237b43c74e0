"""Opening a trained run: its record, its recipe and its weights, rebuilt into a flow.

Reading a run parses JSON and safetensors only: it never executes code from the files.

Example (after ``flowforge train --out runs/demo``)::

    import flowforge as ff
    flow = ff.load("runs/demo")          # a flowforge.Flow (a table's: its defensive mixture)
    flow.log_prob(torch.zeros(1, 2))     # log-density in the data's own units
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from flowforge.core import Flow
from flowforge.core.defensive import DefensiveMixture
from flowforge.runs.defensive import defend
from flowforge.runs.errors import ConfigError, RunError
from flowforge.runs.layout import RunFiles, read_run_record, run_files
from flowforge.runs.metrics import MetricsLog
from flowforge.runs.recipe import ModelSpec, build_flow
from flowforge.runs.status import SBI_KIND, incomplete
from flowforge.runs.weights import load_weights

__all__ = ["Run", "load", "open_run", "parse_spec"]


@dataclass
class Run:
    """A trained run, opened.

    Attributes:
        files: the run's paths.
        spec: the flow's recipe.
        record: the whole ``config.json``: the training options under ``"config"`` (parsed by
            :func:`flowforge.train.run.run_config`), the data description, step count, versions.
        flow: the trained flow, in evaluation mode; for a table whose recipe has a defensive
            entry, the :class:`~flowforge.core.defensive.DefensiveMixture` of it and the
            Gaussian start (the trained flow is then ``flow.flow``).
        incomplete: the note of a run that did not finish (:func:`flowforge.runs.status.
            incomplete`: ``"incomplete: step N of M (...)"``), whatever its kind; else ``None``.
    """

    files: RunFiles
    spec: ModelSpec
    record: dict[str, Any]
    flow: Flow | DefensiveMixture
    incomplete: str | None = None


def parse_spec(record: dict[str, Any], origin: str) -> ModelSpec:
    """The flow recipe of a run record (its ``"model"`` entry).

    Args:
        record: a record from :func:`~flowforge.runs.layout.read_run_record`.
        origin: the file the record came from, for the message.

    Raises:
        RunError: if the recipe is missing or malformed.
    """
    try:
        return ModelSpec.from_dict(record["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise RunError(f"{origin} has a malformed run record ({type(e).__name__}: {e})") from None


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
    if record.get("task") == SBI_KIND:
        raise RunError(
            f"{files.root} is a simulation-based inference run (a posterior q(theta | x)): "
            "open it with flowforge.load(path) or flowforge.sbi.load(path) in Python"
        )
    spec = parse_spec(record, str(files.config))
    try:
        flow = build_flow(spec)
        load_weights(files.weights, flow)
        model = defend(flow, spec)
    except ConfigError as e:
        raise RunError(f"{files.config}: {e}") from None
    model.to(device).eval()
    note = incomplete(files.root, record, MetricsLog(files.metrics).read())
    return Run(files, spec, record, model, note)


def load(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> Flow | DefensiveMixture:
    """The trained flow of a run directory, in evaluation mode.

    The flow is a :class:`flowforge.Flow` over the data in its original units: user and
    scikit-learn tabular data unstandardised (the run's training statistics are inside the
    flow); images in the dataset's own event shape, ``(N, C, H, W)`` values in ``[0, 1)``
    (dequantized pixels ``(v + noise) / K``; the logit pre-transform is inside the flow, and
    ``flow.sample(n)`` returns ``(n, C, H, W)`` in ``[0, 1)``), whatever the preset: a vector
    preset sees the image through a ``Reshape`` inside the flow. A standardised table's run
    (trained since the defensive mixture) is a
    :class:`~flowforge.core.defensive.DefensiveMixture` of its flow and its Gaussian start,
    with the same ``log_prob`` / ``sample`` / ``sample_and_log_prob``. Run format 2: an image run
    of format 1 (which took flattened ``(N, D)`` rows) is refused with a :class:`RunError`.

    Args:
        path: a run directory written by ``flowforge train``.
        device: where to put the flow.

    Raises:
        RunError: if the run is missing, corrupted or not a flowforge run.
    """
    return open_run(path, device).flow
