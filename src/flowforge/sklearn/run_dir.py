"""Writing a fitted estimator as a run directory (``config.json``, ``model.safetensors``,
``data.npy``) through :mod:`flowforge.runs`, so ``ff.load`` and ``flowforge eval`` read it."""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from flowforge.core.defensive import DefensiveMixture
from flowforge.runs import RUN_FORMAT, RUN_FORMAT_VERSION, ModelSpec, run_files
from flowforge.runs.writer import RunWriter


class FittedEstimator(Protocol):
    """What :func:`write_run` reads of a fitted estimator (:class:`~flowforge.sklearn.FlowDensity`
    or :class:`~flowforge.sklearn.FlowAnomalyDetector`)."""

    spec_: ModelSpec
    flow_: torch.nn.Module
    batch_size: int
    lr: float
    n_features_in_: int

    def get_params(self, deep: bool = True) -> dict[str, Any]: ...


__all__ = ["DATA_FILE", "write_run"]

#: The rows stored with the run for ``flowforge eval``.
DATA_FILE = "data.npy"


def write_run(root: Path, est: FittedEstimator, data: np.ndarray | None) -> Path:
    """Write the run directory of a fitted estimator (see :meth:`FlowDensity.save`).

    An existing run at ``root`` is replaced (its files only); a folder there that is not a run
    is refused. The record comes first and ``results.json`` last, like every run's, so a save
    that was killed midway reads as an incomplete run.

    Raises:
        flowforge.runs.ConfigError: ``root`` is a non-empty folder that is not a run.
        flowforge.runs.RunError: another process is writing there.
    """
    files = run_files(root)
    data_path = (files.root / DATA_FILE).resolve()
    source: dict[str, Any] | None = None
    npy = None
    if data is not None:
        array = np.ascontiguousarray(data, dtype=np.float64)
        buf = io.BytesIO()
        np.save(buf, array)
        npy = buf.getvalue()
        # the fingerprint of the file to be written (flowforge.data.user.file_source's)
        source = {
            "file": DATA_FILE,
            "rows": int(array.shape[0]),
            "columns": int(array.shape[1]),
            "sha256": hashlib.sha256(npy).hexdigest(),
            "header": False,
        }
    # the training options flowforge eval reads (flowforge.train.config.TrainConfig's keys;
    # the others take their defaults there)
    options = {
        "data": str(data_path),
        "flow": est.spec_.preset,
        "seed": 0,
        "batch_size": int(est.batch_size),
        "lr": float(est.lr),
        "quiet": True,
        "plots": False,
        "device": "cpu",
    }
    d = int(est.n_features_in_)
    record: dict[str, Any] = {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "config": options,
        "model": est.spec_.to_dict(),
        "data": {
            "name": data_path.stem,
            "kind": "tabular",
            "event_shape": [d],
            "dim": d,
            "levels": None,
            "columns": [f"x{i}" for i in range(d)],
            "source": source,
        },
        "total_steps": 0,
        "estimator": {"class": type(est).__name__, "params": _jsonable(est.get_params())},
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    with RunWriter.create(files.root, record, overwrite=True) as writer:
        if npy is not None:
            writer.write_bytes(DATA_FILE, npy)
        flow = est.flow_  # a defensive mixture: the weights file holds its flow's (config the rest)
        flow = flow.flow if isinstance(flow, DefensiveMixture) else flow
        state = {k: v.detach().to(torch.float32) for k, v in flow.state_dict().items()}
        writer.write_weights(state)
        writer.write_results({"task": "estimator", "epochs": int(getattr(est, "n_epochs_", 0))})
    return files.root


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (tuple, list)):
            out[k] = list(v)
        elif isinstance(v, dict):
            out[k] = {str(a): b for a, b in v.items() if isinstance(b, (str, int, float, bool))}
        else:
            out[k] = repr(v)
    return out
