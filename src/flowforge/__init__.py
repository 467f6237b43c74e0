"""flowforge: normalizing flows for PyTorch with exact likelihoods.

Example:
    >>> import torch, flowforge as ff
    >>> flow = ff.flows.NSF(features=2, transforms=2, hidden=(16, 16))
    >>> flow.log_prob(torch.zeros(5, 2)).shape
    torch.Size([5])
"""

import os as _os

import torch as _torch

from flowforge import data, distributions, eval, flows, functional, nn, runs, sbi, transforms, vi
from flowforge._version import __version__
from flowforge.core import Bijection, Compose, Flow, FlowDistribution, Inverse
from flowforge.core.defensive import DefensiveMixture as _DefensiveMixture

#: Names loaded on first access, so that ``import flowforge`` imports no scikit-learn.
_LAZY = {"FlowAnomalyDetector": "flowforge.sklearn", "FlowDensity": "flowforge.sklearn"}


def load(
    path: str | _os.PathLike[str], device: str | _torch.device = "cpu"
) -> Flow | _DefensiveMixture | sbi.Posterior:
    """The trained model of a run directory: a flow (:func:`flowforge.runs.load`), or for a
    simulation-based inference run the :class:`flowforge.sbi.Posterior`
    (:func:`flowforge.sbi.load`). Reading a run executes no code (JSON and safetensors).

    Raises:
        flowforge.runs.RunError: missing, corrupted or foreign.
    """
    from flowforge.runs.status import SBI_KIND

    if runs.read_run_record(path).get("task") == SBI_KIND:
        return sbi.load(path, device)
    return runs.load(path, device)


def __getattr__(name: str) -> object:
    """``ff.FlowDensity`` and ``ff.FlowAnomalyDetector``: imported from :mod:`flowforge.sklearn`
    (which needs scikit-learn) on first access."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'flowforge' has no attribute {name!r}")


def __dir__() -> list[str]:
    """Every public name, the lazy ones included (without importing them)."""
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "Bijection",
    "Compose",
    "Flow",
    "FlowAnomalyDetector",
    "FlowDensity",
    "FlowDistribution",
    "Inverse",
    "__version__",
    "data",
    "distributions",
    "eval",
    "flows",
    "functional",
    "load",
    "nn",
    "sbi",
    "transforms",
    "vi",
]
