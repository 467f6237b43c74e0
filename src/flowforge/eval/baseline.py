"""A full-covariance Gaussian fitted to the training rows: the baseline of every tabular NLL.

A flow that scores worse than this on the test rows has learned less than the mean and the
covariance of the data (typically: overfitted on a small table); ``flowforge eval`` reports the
baseline next to the test NLL and warns when the flow is worse.

For a standardised table (every training run's default) the baseline *is* the flow's Gaussian
start (:func:`start_baseline`): the same training rows, the same shrinkage rules
(:func:`~flowforge.transforms.whiten.start_whiten`: chosen by at least 10 validation rows, else
by cross-validation on the training rows, Ledoit-Wolf's on rank-deficient rows), so it is the
best Gaussian flowforge can fit without the test rows, and the defensive mixture
(:mod:`flowforge.runs.defensive`) falls back to exactly it. Other rows get the
maximum-likelihood Gaussian (plus :data:`RIDGE` on the diagonal; :func:`gaussian_baseline`),
Ledoit-Wolf's on rank-deficient rows. On nearly collinear columns the maximum-likelihood
covariance is nearly singular, and a test row off the training rows' subspace can score
thousands of nats: there that number says little.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from flowforge.data.base import Dataset
from flowforge.eval.likelihood import NLLSummary, summarize
from flowforge.transforms.whiten import (
    FULL_RANK,
    RIDGE,
    centred_covariance,
    gaussian_log_density,
    ledoit_wolf,
    shrunk_covariance,
    start_whiten,
)

__all__ = ["RIDGE", "GaussianBaseline", "dataset_baseline", "gaussian_baseline", "start_baseline"]


@dataclass
class GaussianBaseline(NLLSummary):
    """The baseline's NLL summary, and ``note``: why it is not the maximum-likelihood
    Gaussian (rank-deficient training rows), else ``None``."""

    note: str | None = None

    def suffix(self) -> str:
        """``"; note"`` for the printed line, or ``""``."""
        return "" if self.note is None else f" ({self.note})"


def gaussian_baseline(
    train: Tensor, test: Tensor, log_abs_det: float | Tensor = 0.0
) -> GaussianBaseline:
    """Test NLL of the maximum-likelihood Gaussian (mean, full covariance) of ``train``.

    Rank-deficient training rows (the smallest eigenvalue of their correlation under
    :data:`~flowforge.transforms.whiten.FULL_RANK`, as the flow's start decides) get the
    start's rule instead, Ledoit-Wolf's shrunk covariance, and a ``note`` saying so: the
    maximum-likelihood covariance there is singular but for the ridge, and a held-out row off
    the rows' subspace scored 132,249,176 nats on a 300 x 500 table.

    Args:
        train: ``(N, D)`` training rows (standardised or not; float64 arithmetic).
        test: ``(M, D)`` rows to score, in the same units.
        log_abs_det: the log-Jacobian of the map from the data's units to these rows (the
            standardisation's ``-sum(log std)``), so that the NLL is in the data's own units.

    Returns:
        The NLL summary (nats, 2 standard errors) over all ``M`` rows.

    Example:
        >>> import math
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(20000, 2, generator=g, dtype=torch.float64)
        >>> abs(gaussian_baseline(x, x).nll - math.log(2 * math.pi * math.e)) < 0.02  # D = 2
        True
    """
    a = train.double().reshape(train.shape[0], -1)
    b = test.double().reshape(test.shape[0], -1)
    if a.shape[0] < 2:
        raise ValueError(f"a Gaussian baseline needs at least 2 training rows, got {a.shape[0]}")
    emp = centred_covariance(a)[1]
    scale = torch.sqrt(torch.diagonal(emp)).clamp_min(1e-300)  # the correlation's eigenvalues:
    smallest = float(torch.linalg.eigvalsh(emp / scale / scale[:, None])[0])  # the start's units
    note = None
    if not smallest >= FULL_RANK:  # the start's rule: Ledoit-Wolf's shrinkage
        emp, s = ledoit_wolf(a)
        note = (
            f"the training rows are rank deficient (smallest eigenvalue of their correlation "
            f"{max(smallest, 0.0):.2g} < {FULL_RANK:g}, {a.shape[0]} rows x {a.shape[1]} columns): "
            f"Ledoit-Wolf covariance, shrinkage {s:.3g}, as the flow's Gaussian start"
        )
    cov = emp + RIDGE * torch.eye(a.shape[1], dtype=a.dtype)
    ll = gaussian_log_density(a.mean(0), torch.linalg.cholesky(cov), b)
    out = summarize(ll + float(log_abs_det))
    return GaussianBaseline(out.nll, out.nll_err, out.n, note=note)


def start_baseline(
    train: Tensor,
    val: Tensor | None,
    test: Tensor,
    log_abs_det: float | Tensor = 0.0,
    *,
    split: str = "test",
) -> GaussianBaseline:
    """Test NLL of a standardised table's Gaussian start: the mean and the shrunk covariance of
    ``train``, the shrinkage chosen as the flow's start chooses it
    (:func:`~flowforge.transforms.whiten.start_whiten` with the validation rows ``val``).

    Args:
        train: ``(N, D)`` standardised training rows, ``N >= 2``.
        val: ``(M, D)`` validation rows in the same units, or ``None``.
        test: ``(K, D)`` rows to score, in the same units.
        log_abs_det: the log-Jacobian of the standardisation (its ``-sum(log std)``).
        split: which split ``test`` is. ``"val"``: the rows that chose the flow's kept step and
            its mixture weight (and, with at least 10 of them, this shrinkage), so the ``note``
            says that both scores there are optimistic.

    Returns:
        The NLL summary (nats, 2 standard errors), its ``note`` naming the shrinkage and how it
        was chosen.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(300, 2, generator=g, dtype=torch.float64)
        >>> b = start_baseline(x[:200], x[200:250], x[250:])
        >>> b.note.startswith("the flow's Gaussian start: shrinkage")
        True
    """
    a = train.double().reshape(train.shape[0], -1)
    b = test.double().reshape(test.shape[0], -1)
    v = None if val is None else val.double().reshape(val.shape[0], -1)
    if a.shape[0] < 2:
        raise ValueError(f"a Gaussian baseline needs at least 2 training rows, got {a.shape[0]}")
    _, s, method = start_whiten(a, v)
    chol = torch.linalg.cholesky(shrunk_covariance(a, s))
    out = summarize(gaussian_log_density(a.mean(0), chol, b) + float(log_abs_det))
    note = f"the flow's Gaussian start: shrinkage {s:.3g}, {method}"
    if split == "val":
        chose = " and this shrinkage" if method == "validated" else ""
        note += (
            f"; scored on the validation rows, which chose the flow's kept step, its mixture "
            f"weight{chose}: both scores are optimistic, --split test scores held-out rows"
        )
    return GaussianBaseline(out.nll, out.nll_err, out.n, note=note)


def dataset_baseline(ds: Dataset, split: str = "test") -> GaussianBaseline | None:
    """The Gaussian baseline of a tabular dataset's split, in the data's own units.

    Returns:
        For a standardised table, the NLL of its Gaussian start (:func:`start_baseline`); for
        other tables that of the maximum-likelihood Gaussian of ``ds.train``
        (:func:`gaussian_baseline`); ``None`` for datasets that are not tables with at least 2
        training rows (toy sets, images).
    """
    rows = getattr(ds, split) if split in ("train", "val", "test") else None
    if ds.kind != "tabular" or ds.train is None or ds.train.shape[0] < 2 or rows is None:
        return None
    if ds.standardizer is None:
        return gaussian_baseline(ds.train, rows)
    val = getattr(ds, "val", None)
    return start_baseline(ds.train, val, rows, ds.standardizer.log_abs_det(), split=split)
