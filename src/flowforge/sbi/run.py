"""A posterior as a run directory: written through :class:`~flowforge.runs.RunWriter`, read back
by :func:`load` (and :func:`flowforge.load`) from JSON and safetensors only.

The record (``config.json``) has ``"task": "sbi"`` and ``"posterior"``: the recipe
(:func:`~flowforge.sbi.posterior.build_posterior`), with the box prior's bounds; a prior that is
not a box is described (``repr``) but not rebuilt: pass it to :func:`load` as ``prior=``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution

from flowforge.runs import RunError, load_weights, read_run_record, run_files
from flowforge.runs.status import SBI_KIND
from flowforge.sbi.posterior import Posterior, build_posterior, run_record, save_posterior

__all__ = ["load", "run_record", "save_posterior"]


def load(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    *,
    prior: Distribution | None = None,
    embedding: nn.Module | None = None,
) -> Posterior:
    """The posterior of a run directory written by :meth:`Posterior.save` or ``flowforge sbi``.

    Args:
        path: the run directory.
        device: where to put the posterior.
        prior: the prior to attach (a box prior is rebuilt from the record without it).
        embedding: an instance of a custom embedding's class (built-in ones are rebuilt).

    Raises:
        RunError: not an sbi run, a malformed record, or weights that do not fit.
    """
    files = run_files(path)
    record = read_run_record(files.root)
    if record.get("task") != SBI_KIND:
        raise RunError(
            f"{files.root} is not a simulation-based inference run (task {record.get('task')!r}); "
            "open it with flowforge.load"
        )
    try:
        posterior = build_posterior(record["posterior"], embedding=embedding, prior=prior)
    except (KeyError, TypeError, ValueError) as e:
        raise RunError(f"{files.config}: cannot rebuild the posterior: {e}") from None
    load_weights(files.weights, posterior)
    history = [r for r in _read_metrics(files.metrics)]
    posterior.history = history
    results = files.results
    if results.exists():
        import json

        try:
            posterior.info = json.loads(results.read_text(encoding="utf-8"))
        except ValueError:
            posterior.info = {}
    return posterior.to(device).eval()


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    from flowforge.runs.metrics import MetricsLog

    return list(MetricsLog(path).read()) if path.exists() else []
