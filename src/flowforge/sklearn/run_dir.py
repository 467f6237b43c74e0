"""Writing a fitted estimator as a run directory (``config.json``, ``model.safetensors``,
``data.npy``) through :mod:`flowforge.runs`, so ``ff.load`` and ``flowforge eval`` read it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from flowforge.data.user import file_source
from flowforge.runs import RUN_FORMAT, RUN_FORMAT_VERSION, atomic_write_json, run_files
from flowforge.runs.atomic import atomic_write_bytes
from flowforge.runs.weights import save_weights
from flowforge.train.config import TrainConfig

if TYPE_CHECKING:
    from flowforge.sklearn.density import FlowDensity

__all__ = ["DATA_FILE", "write_run"]

#: The rows stored with the run for ``flowforge eval``.
DATA_FILE = "data.npy"


def write_run(root: Path, est: FlowDensity, data: np.ndarray | None) -> Path:
    """Write the run directory of a fitted estimator (see :meth:`FlowDensity.save`)."""
    import io

    files = run_files(root)
    files.root.mkdir(parents=True, exist_ok=True)
    data_path = (files.root / DATA_FILE).resolve()
    source: dict[str, Any] | None = None
    if data is not None:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(data, dtype=np.float64))
        atomic_write_bytes(data_path, buf.getvalue())
        source = file_source(data_path, data, False)
    cfg = TrainConfig(
        data=str(data_path),
        flow=est.spec_.preset,
        seed=0,
        batch_size=int(est.batch_size),
        lr=float(est.lr),
        quiet=True,
        plots=False,
        device="cpu",
    )
    state = {k: v.detach().to(torch.float32) for k, v in est.flow_.state_dict().items()}
    save_weights(files.weights, state)
    d = int(est.n_features_in_)
    record: dict[str, Any] = {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "config": cfg.to_dict(),
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
    }
    atomic_write_json(files.config, record)
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
