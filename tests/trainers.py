"""A quiet :class:`~flowforge.train.loop.Trainer` for the tests of the fit loop.

Each training test builds its flow, dataset and config its own way and then the same trainer:
``ds``'s training stream, its validation split, the CPU, no log lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from flowforge.data import Dataset
from flowforge.train.batches import TrainStream, prepare_split
from flowforge.train.config import TrainConfig
from flowforge.train.loop import Trainer
from flowforge.train.metrics import MetricsLog

CPU = torch.device("cpu")


def quiet_trainer(
    flow: nn.Module, ds: Dataset, cfg: TrainConfig, total: int, **options: Any
) -> Trainer:
    """A trainer of ``flow`` for ``total`` steps on ``ds`` (batches of ``cfg.batch_size``,
    seeded by ``cfg.seed``), validated on ``ds``'s val split; ``options`` go to
    :class:`Trainer` (``objective=``, ``levels=``, ``checkpoint=``, ...)."""
    stream = TrainStream(ds, cfg.batch_size, cfg.seed)
    val = prepare_split(ds, "val", cfg.seed)
    return Trainer(flow, stream, val, cfg, total, CPU, log=lambda msg: None, **options)


def run_files(folder: Path) -> dict[str, Any]:
    """The ``metrics``, ``checkpoint`` and ``weights`` files of a run in ``folder``."""
    return {
        "metrics": MetricsLog(folder / "metrics.jsonl"),
        "checkpoint": folder / "checkpoint.safetensors",
        "weights": folder / "model.safetensors",
    }
