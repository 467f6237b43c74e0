"""A full-covariance Gaussian fitted to the training rows: the baseline of every tabular NLL.

A flow that scores worse than this on the test rows has learned less than the mean and the
covariance of the data (typically: overfitted on a small table); ``flowforge eval`` reports the
baseline next to the test NLL and warns when the flow is worse.

This is the maximum-likelihood Gaussian (plus :data:`RIDGE` on the diagonal), on the dataset's
own training rows (standardised in float64, then cast). On nearly collinear columns it is nearly
singular, and a test row off the training rows' subspace can score thousands of nats: there the
number says little. A whitened table flow (:mod:`flowforge.transforms.whiten`) starts from a
shrunk Gaussian instead, which avoids that.
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
)

__all__ = ["RIDGE", "GaussianBaseline", "dataset_baseline", "gaussian_baseline"]


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


def dataset_baseline(ds: Dataset, split: str = "test") -> GaussianBaseline | None:
    """The Gaussian baseline of a tabular dataset's split, in the data's own units.

    Returns:
        The NLL of a full-covariance Gaussian fitted to ``ds.train`` on ``split``; ``None``
        for datasets that are not tables with at least 2 training rows (toy sets, images).
    """
    rows = getattr(ds, split) if split in ("train", "val", "test") else None
    if ds.kind != "tabular" or ds.train is None or ds.train.shape[0] < 2 or rows is None:
        return None
    log_det = 0.0 if ds.standardizer is None else ds.standardizer.log_abs_det()
    return gaussian_baseline(ds.train, rows, log_det)
