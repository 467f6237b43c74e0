"""What a run's records say about it: overfitting, and a run that did not finish.

``flowforge eval`` (and ``flowforge train`` at the end) read them from the run directory:

- :func:`overfitting`: the validation NLL of the kept weights far above their training loss
  (more than :data:`OVERFIT_NATS_PER_DIM` nats per dimension and :data:`OVERFIT_MIN_NATS` in
  all): the flow scores its training rows much better than new rows;
- :func:`incomplete` (:mod:`flowforge.runs.status`, the note of every kind of run): a run
  killed before it finished (no ``results.json``) at the last validated step of its total.

Example:
    >>> records = [{"step": 10, "train_loss": 2.0, "val_nll": 9.0},
    ...            {"step": 20, "train_loss": 1.0, "val_nll": 12.0}]
    >>> print(overfitting(records, best_step=10, dim=2))
    the validation NLL 9.0000 at step 10 (the kept weights) is 7.0000 nats above the training loss 2.0000: the flow has likely overfitted the training rows (a smaller --hidden, --weight-decay, --patience or fewer steps help)
    >>> overfitting(records, best_step=10, dim=20) is None  # 0.35 nats per dimension
    True
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowforge.runs.metrics import MetricsLog
from flowforge.runs.status import incomplete

__all__ = ["OVERFIT_MIN_NATS", "OVERFIT_NATS_PER_DIM", "diagnose", "incomplete", "overfitting"]

#: The gap between validation NLL and training loss, per dimension, above which a run warns.
OVERFIT_NATS_PER_DIM = 0.5

#: ... and at least this many nats in all (a 1-D or 2-D flow's noise).
OVERFIT_MIN_NATS = 2.0


def overfitting(
    records: Sequence[dict[str, Any]], best_step: int, dim: int, likelihood: bool = True
) -> str | None:
    """A warning when the kept weights' validation NLL is far above their training loss, or
    when the training loss itself rose (the run diverged, which is not overfitting).

    Args:
        records: the run's ``metrics.jsonl`` records (``step``, ``train_loss``, ``val_nll``).
        best_step: the step whose weights the run kept (``results.json``'s ``best_step``);
            0: the starting weights (no record of their training loss).
        dim: the data's dimension.
        likelihood: whether the training loss is a negative log-likelihood (flow matching's is
            a squared error: no comparison with the validation NLL is made).

    Returns:
        One line, or ``None`` when the gap is small or the records do not say.

    Example:
        >>> rows = [{"step": 10, "train_loss": 3.0, "val_nll": 9.0},
        ...         {"step": 20, "train_loss": 80.0, "val_nll": 95.0}]
        >>> print(overfitting(rows, best_step=0, dim=2))
        the training loss rose from 3.0000 at step 10 to 80.0000 at step 20: training diverged (a smaller --lr or --clip-grad help); the kept weights are the step-0 start, which no validation beat
    """
    usable = [r for r in records if _finite(r.get("val_nll"))]
    losses = [r for r in records if _finite(r.get("train_loss"))]
    kept = next((r for r in usable if r.get("step") == best_step), None)
    where = (
        "the kept weights are the step-0 start, which no validation beat"
        if kept is None and best_step == 0
        else f"the kept weights are those of step {best_step}"
    )
    first = losses[0] if losses else None
    last = records[-1] if records else None
    if first is not None and last is not None:
        end: Any = last.get("train_loss")
        rose = not _finite(end) or float(end) - float(first["train_loss"]) > max(
            OVERFIT_MIN_NATS, OVERFIT_NATS_PER_DIM * dim
        )
        if rose:
            shown = f"{float(end):.4f}" if _finite(end) else str(end)
            return (
                f"the training loss rose from {float(first['train_loss']):.4f} at step "
                f"{first['step']} to {shown} at step {last['step']}: training diverged (a "
                f"smaller --lr or --clip-grad help); {where}"
            )
    if not likelihood or kept is None or not _finite(kept.get("train_loss")):
        return None
    train, val = float(kept["train_loss"]), float(kept["val_nll"])
    gap = val - train
    if gap <= max(OVERFIT_MIN_NATS, OVERFIT_NATS_PER_DIM * dim):
        return None
    return (
        f"the validation NLL {val:.4f} at step {kept['step']} (the kept weights) is {gap:.4f} "
        f"nats above the training loss {train:.4f}: the flow has likely overfitted the training "
        "rows (a smaller --hidden, --weight-decay, --patience or fewer steps help)"
    )


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def diagnose(root: Path, record: dict[str, Any], dim: int) -> tuple[str | None, str | None]:
    """:func:`incomplete` and :func:`overfitting` of the run directory ``root``.

    The kept weights are those of ``results.json``'s ``best_step``; for a run that did not
    finish, the best validated step so far (what its weights file holds).
    """
    records = MetricsLog(root / "metrics.jsonl").read()
    try:
        results = json.loads((root / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        results = None
    if isinstance(results, dict) and isinstance(results.get("best_step"), int):
        best = int(results["best_step"])
    else:
        scored = [r for r in records if _finite(r.get("val_nll"))]
        best = int(min(scored, key=lambda r: r["val_nll"])["step"]) if scored else -1
    objective = (record.get("config") or {}).get("objective", "likelihood")
    likelihood = objective != "flow-matching"
    return incomplete(root, record, records), overfitting(records, best, dim, likelihood)
