"""Defaults that fit the table: training options chosen from the number of rows and columns.

The fixed defaults of :class:`~flowforge.train.config.TrainConfig` (batch 256, a validation
every 100 steps, no early stopping, the presets' command-line width) suit 2-D toy data and
large tables. On a table of a few hundred rows they overfit before the first validation: the
batch is larger than the training set and 100 steps are many epochs. For tables with a
training set :func:`size_for_data` chooses instead, for every option the user did not give
(``cfg.given``; a flag, a TOML key or a preset's own default always wins):

- ``batch_size``: at most the training rows (and 256);
- ``eval_every``: one epoch, at most 100 steps;
- ``patience``: early stopping on (``restore_best``, on by default, then ends with the best
  validated weights), counted in evaluations: 50 when every epoch is validated, else 10;
- small tables (under :data:`SMALL_ROWS` training rows), vector presets: ``hidden`` of
  :data:`SMALL_WIDTH` per column, at least 32 and at most 64, two layers; ``transforms`` 3
  (1 for the :data:`AFFINE_AUTOREGRESSIVE` presets);
  ``lr`` 1e-3 (the smaller steps leave early stopping a finer choice of epoch); ``weight_decay``
  1e-3. (Dropout, now a preset option, is not chosen: not measured on these tables yet.)
- ``whiten`` (standardised tables, vector presets): on, so the flow starts as the
  full-covariance Gaussian of the training rows, its shrinkage chosen by the validation rows
  (by cross-validation on the training rows with fewer than 10 validation rows; Ledoit-Wolf's
  when the rows are rank deficient: :func:`flowforge.transforms.whiten.start_whiten`); with
  the validation of the starting weights (step 0) and ``restore_best`` the kept flow is never
  worse on the validation rows than that Gaussian.

The choice is a layer of options (a dictionary), printed by ``flowforge train`` and saved in the
run's ``config.json`` (the options themselves, and their names under ``"sized_from_data"``).
``--no-size-from-data`` keeps the fixed defaults.

Example:
    >>> import torch
    >>> from flowforge.data import Dataset
    >>> from flowforge.train.config import TrainConfig
    >>> ds = Dataset("t", "tabular", (13,), torch.zeros(142, 13), torch.zeros(18, 13),
    ...              torch.zeros(18, 13))
    >>> cfg, chosen = size_for_data(TrainConfig.from_layers({"flow": "maf", "lr": 3e-3}), ds)
    >>> chosen
    {'batch_size': 142, 'eval_every': 1, 'patience': 50, 'hidden': (32, 32), 'transforms': 1, 'weight_decay': 0.001}
    >>> cfg.batch_size, cfg.lr  # the user's lr wins
    (142, 0.003)
"""

from __future__ import annotations

import math
from typing import Any

from flowforge.data.base import Dataset
from flowforge.train.config import TrainConfig

__all__ = [
    "AFFINE_AUTOREGRESSIVE",
    "SIZED_PRESETS",
    "SMALL_ROWS",
    "SMALL_WIDTH",
    "describe",
    "size_for_data",
]

#: Training rows under which a table is small: narrower, fewer transforms, a smaller step.
SMALL_ROWS = 2000

#: Hidden units per column of a small table's conditioner layers (clipped to 32..64).
SMALL_WIDTH = 2

#: The presets whose size the rule chooses (discrete vector flows with ``transforms`` and
#: ``hidden`` widths); others keep their command-line size.
SIZED_PRESETS = ("nice", "realnvp", "maf", "iaf", "nsf")

#: Presets that get one transform on a small table: one affine autoregressive layer already
#: holds a full-covariance Gaussian (more overfitted wine in our measurement: MAF test NLL
#: 19.7 / 21.1 with three, 19.1 / 19.6 with one, on two seeds; the Gaussian 19.6 / 18.6).
AFFINE_AUTOREGRESSIVE = ("maf", "iaf")


def _choice(cfg: TrainConfig, rows: int, columns: int, standardized: bool) -> dict[str, Any]:
    batch = min(cfg.batch_size if "batch_size" in cfg.given else 256, rows)
    per_epoch = math.ceil(rows / batch)
    every = min(100, per_epoch)
    out: dict[str, Any] = {
        "batch_size": batch,
        "eval_every": every,
        "patience": 50 if every == per_epoch else 10,
    }
    if standardized and cfg.flow in SIZED_PRESETS:
        out["whiten"] = True
    if rows < SMALL_ROWS and cfg.flow in SIZED_PRESETS:
        width = min(64, max(32, SMALL_WIDTH * columns))
        transforms = 1 if cfg.flow in AFFINE_AUTOREGRESSIVE else 3
        out |= {"hidden": (width, width), "transforms": transforms, "lr": 1e-3}
        out["weight_decay"] = 1e-3
    return out


def size_for_data(cfg: TrainConfig, ds: Dataset) -> tuple[TrainConfig, dict[str, Any]]:
    """``cfg`` with the options it does not give chosen from the size of ``ds``'s training set.

    Args:
        cfg: the run's options (``cfg.given`` names those a layer set).
        ds: the dataset.

    Returns:
        The updated options and what was chosen (empty: nothing, for toy data that draw fresh
        samples, images, or ``size_from_data = false``).
    """
    if not cfg.size_from_data or ds.kind != "tabular" or ds.train is None:
        return cfg, {}
    standardized = ds.standardizer is not None and ds.train.shape[0] >= 2
    choice = _choice(cfg, int(ds.train.shape[0]), ds.dim, standardized)
    chosen = {k: v for k, v in choice.items() if k not in cfg.given and getattr(cfg, k) != v}
    if not chosen:
        return cfg, {}
    return cfg.replace(**chosen), chosen


def describe(chosen: dict[str, Any], ds: Dataset) -> str:
    """One line naming the choice, for the console (``""`` when nothing was chosen).

    Example:
        >>> import torch
        >>> from flowforge.data import Dataset
        >>> ds = Dataset("t", "tabular", (3,), torch.zeros(10, 3), torch.zeros(2, 3), torch.zeros(2, 3))
        >>> describe({"batch_size": 10, "hidden": (32, 32)}, ds)
        'defaults for 10 training rows x 3 columns: --batch-size 10 --hidden 32,32 (flags override them; --no-size-from-data keeps the fixed ones)'
    """
    if not chosen:
        return ""
    assert ds.train is not None
    parts = []
    for key, value in chosen.items():
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, bool):
            parts.append(flag if value else f"--no-{flag[2:]}")
            continue
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else f"{value:g}"
        parts.append(f"{flag} {shown}")
    return (
        f"defaults for {ds.train.shape[0]} training rows x {ds.dim} columns: {' '.join(parts)} "
        "(flags override them; --no-size-from-data keeps the fixed ones)"
    )
