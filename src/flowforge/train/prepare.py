"""The parts of ``flowforge train`` around the fit: a run's options and threads, its data, its
record (``config.json``), its learned dequantizer, and the split summaries written into
``results.json`` (computed by :mod:`flowforge.eval.summary`; ``flowforge eval`` uses them too).
:mod:`.run` puts them together. ``resolve_device`` is :mod:`flowforge.fit.device`'s.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowforge._version import __version__
from flowforge.data import Dataset, load_dataset
from flowforge.data.audio import mel_context
from flowforge.data.sklearn_sets import class_context
from flowforge.data.user import check_source
from flowforge.dequantization import DequantizedLikelihood, Dequantizer
from flowforge.eval.likelihood import NLLSummary
from flowforge.eval.summary import dequantized_summary as _dequantized_summary
from flowforge.eval.summary import split_summary
from flowforge.fit.device import resolve_device
from flowforge.runs import (
    RUN_FORMAT,
    RUN_FORMAT_VERSION,
    ModelSpec,
    RunError,
    load_weights,
)
from flowforge.runs.recipe import DEQUANTIZER_FILE, build_dequantizer
from flowforge.train.batches import steps_per_epoch
from flowforge.train.config import ConfigError, TrainConfig
from flowforge.train.losses import VariationalDequantization
from flowforge.train.optim_options import OptimOptions

__all__ = [
    "default_out_dir",
    "dequantized_summary",
    "load_data",
    "load_dequantizer",
    "new_record",
    "resolve_device",
    "run_config",
    "set_threads",
    "test_summary",
    "total_steps_of",
]


def run_config(record: dict[str, Any], origin: str) -> TrainConfig:
    """The training options of a run record (its ``"config"`` entry).

    Args:
        record: a record from :func:`flowforge.runs.read_run_record` (or ``Run.record``).
        origin: the file the record came from, for the message.

    Raises:
        RunError: if the options are missing or malformed.
    """
    try:
        options = dict(record["config"])
        options.setdefault("condition", "none")  # audio runs before the vocoder: unconditional
        return TrainConfig.from_dict(options)
    except (KeyError, TypeError, ValueError) as e:
        msg = str(e) if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}"
        raise RunError(f"{origin} has a malformed run record ({msg})") from None


def set_threads(cfg: TrainConfig, device: torch.device, spec: ModelSpec) -> None:
    """Set torch's CPU threads for this process (the ``flowforge`` program, never on import).

    ``threads = 0`` picks one thread per 64k activations of a hidden layer (batch x width, times
    the pixels of the first squeezed level for image presets), at least 1 and at most torch's
    default: small flows run fastest on one thread, and spare cores then serve other processes
    instead of spinning. More threads than the machine's logical CPUs are refused (100,000
    crashed the process with a segmentation fault, leaving a half-written run).

    Raises:
        ConfigError: ``threads`` above the machine's logical CPUs.
    """
    cpus = os.cpu_count() or 1
    if cfg.threads > cpus:
        raise ConfigError(
            f"--threads {cfg.threads} is more than this machine's {cpus} logical CPUs (0 chooses)"
        )
    if device.type != "cpu":
        return
    n = cfg.threads
    if n == 0:
        hidden = spec.kwargs.get("hidden", 64)
        width = max(hidden) if isinstance(hidden, (list, tuple)) else int(hidden)
        if "shape" in spec.kwargs:  # conv nets: every pixel of the squeezed image is a row
            width *= max(1, math.prod(spec.data_shape[1:]) // 4)
        n = min(torch.get_num_threads(), max(1, cfg.batch_size * width // 65536))
    torch.set_num_threads(n)


def default_out_dir(cfg: TrainConfig) -> Path:
    stem = Path(cfg.data).stem if Path(cfg.data).suffix else cfg.data
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path("runs") / f"{stem}-{cfg.flow}-{stamp}"
    n = 1
    while out.exists():
        n += 1
        out = Path("runs") / f"{stem}-{cfg.flow}-{stamp}-{n}"
    return out


def load_data(
    cfg: TrainConfig, spec: ModelSpec | None = None, record: dict[str, Any] | None = None
) -> Dataset:
    """The dataset of a run's options (the same splits every time for the same options); audio
    with ``condition = "mel"`` gets each segment's mel frames as its per-example context
    (:func:`~flowforge.data.audio.mel_context`), a labelled image set with ``condition =
    "class"`` each image's one-hot class (:func:`~flowforge.data.sklearn_sets.class_context`).

    Args:
        cfg: the run's options.
        spec: the run's flow recipe, to check the dimension.
        record: the run's record: a user file must still have the fingerprint stored there
            (rows, columns, SHA-256, header), so that a changed file is refused.

    Raises:
        flowforge.data.DataError: the dataset cannot be loaded, or the file changed.
        RunError: its dimension differs from the one the run's flow was built for.
    """
    data = (record or {}).get("data") or {}
    n_val, n_test, header = cfg.n_val, cfg.n_test, cfg.header
    if record is not None and "split" not in data:
        # a run written before --n-val/--n-test applied to tables: its 10000 was ignored there
        n_val = None if n_val == 10_000 else n_val
        n_test = None if n_test == 10_000 else n_test
    if isinstance(data.get("source"), dict):
        header = data["source"].get("header", header)  # the header rule's choice of training
    ds = load_dataset(
        cfg.data,
        data_dir=cfg.data_dir,
        seed=cfg.seed,
        n_val=n_val,
        n_test=n_test,
        columns=cfg.column_list(),
        header=header,
    )
    if ds.kind == "audio" and cfg.condition == "mel":  # a vocoder: p(segment | its mel)
        ds = mel_context(ds)
    if cfg.condition == "class":  # p(image | its class), one-hot
        ds = class_context(ds, cfg.seed, n_val, n_test)
    if spec is not None and ds.dim != spec.features:
        raise RunError(f"{cfg.data} has dimension {ds.dim}; the run was trained on {spec.features}")
    if record is not None:
        check_source(data.get("source"), ds.source, cfg.data)
    return ds


def total_steps_of(opt: OptimOptions, ds: Dataset) -> int:
    """The run's number of steps on ``ds`` (``steps``, or ``epochs`` passes of its batches)."""
    if opt.epochs is None:
        return opt.steps
    return max(1, math.ceil(opt.epochs * steps_per_epoch(ds, opt.batch_size)))


def new_record(
    cfg: TrainConfig, spec: ModelSpec, ds: Dataset, total: int, deq: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "config": cfg.to_dict(),
        "model": spec.to_dict(),
        **({} if deq is None else {"dequantizer": deq}),
        "data": {
            "name": ds.name,
            "kind": ds.kind,
            "event_shape": list(ds.event_shape),
            "dim": ds.dim,
            "levels": ds.levels,
            "columns": ds.columns,
            "source": ds.source,  # user files: rows, columns, sha256, header
            "split": {
                k: (None if t is None else int(t.shape[0]))
                for k, t in (("train", ds.train), ("val", ds.val), ("test", ds.test))
            },
        },
        "total_steps": total,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "versions": {
            "flowforge": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }


def load_dequantizer(record: dict[str, Any], root: Path) -> Dequantizer | None:
    """A run's learned dequantizer (its recipe in the record, its weights in
    ``dequantizer.safetensors``), in evaluation mode; ``None`` for a run without one.

    Raises:
        RunError: the recipe or the weights are missing, corrupted or do not fit.
    """
    spec = record.get("dequantizer")
    if spec is None:
        return None
    try:
        deq = build_dequantizer(spec)
    except ConfigError as e:
        raise RunError(f"{root / 'config.json'}: {e}") from None
    load_weights(root / DEQUANTIZER_FILE, VariationalDequantization(deq))
    return deq.eval()


def dequantized_summary(
    flow: torch.nn.Module,
    ds: Dataset,
    cfg: TrainConfig,
    split: str,
    dequantizer: Dequantizer | None,
    samples: int,
) -> DequantizedLikelihood:
    """:func:`flowforge.eval.summary.dequantized_summary` with the run's seed and evaluation
    batch size."""
    return _dequantized_summary(
        flow, ds, split, dequantizer, samples, seed=cfg.seed, batch_size=cfg.eval_batch_size
    )


def test_summary(
    flow: torch.nn.Module,
    ds: Dataset,
    cfg: TrainConfig,
    split: str,
    dequantizer: Dequantizer | None = None,
) -> NLLSummary:
    """:func:`flowforge.eval.summary.split_summary` with the run's seed and evaluation batch
    size."""
    return split_summary(
        flow, ds, split, dequantizer, seed=cfg.seed, batch_size=cfg.eval_batch_size
    )
